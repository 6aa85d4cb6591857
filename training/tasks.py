"""Celery tasks for training. Thin: take an id, call one service, return quietly."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="training.dataset_build", acks_late=True, ignore_result=True)
def dataset_build_task(version_id: int) -> None:
    """Build a queued dataset version (routed to the ``datasets`` queue by name). The
    service's compare-and-set (queued → running) makes a redelivered message a no-op."""
    from training.services.datasets import dataset_version_build

    dataset_version_build(version_id=version_id)
