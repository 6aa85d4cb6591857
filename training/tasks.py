"""Celery tasks for training. Thin: take an id, call one service, return quietly.

Names ``training.train_*`` are routed to the ``training`` queue; run that queue with
``-c 1 --max-tasks-per-child=1`` so each run has a fresh process and the parent never
touches CUDA. Runs use no late acks: a run is long; its state row, heartbeat and the stale
sweep handle a worker that dies.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="training.dataset_build", acks_late=True, ignore_result=True)
def dataset_build_task(version_id: int) -> None:
    """Build a queued dataset version (routed to the ``datasets`` queue by name). The
    service's compare-and-set (queued → running) makes a redelivered message a no-op."""
    from training.services.datasets import dataset_version_build

    dataset_version_build(version_id=version_id)


@shared_task(name="training.train_run", ignore_result=True)
def train_run_task(run_id: int) -> None:
    """Train a queued run. The compare-and-set QUEUED → RUNNING in ``run_execute`` makes a
    second delivery of the message a no-op."""
    from training.services.runs import run_execute

    run_execute(run_id=run_id)


@shared_task(name="training.runs_sweep_stale", acks_late=True, ignore_result=True)
def runs_sweep_stale_task() -> None:
    """Beat: fail RUNNING runs whose heartbeat went stale (their worker died)."""
    from training.services.runs import runs_fail_stale

    runs_fail_stale()
