"""Celery task for Label Studio jobs. Thin and idempotent: the job row is claimed QUEUED →
RUNNING by compare-and-set, so a redelivered message returns quietly. Unrouted by name, so
it runs on the ``default`` queue (short, network-bound work)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="feedback.labelstudio_job_run", acks_late=True, ignore_result=True)
def labelstudio_job_run_task(job_id: int) -> None:
    """Run one push, pull or file import (``feedback.labelstudio.services.job_run``)."""
    from feedback.labelstudio.services import job_run

    job_run(job_id=job_id)
