"""Celery tasks for Label Studio jobs. Thin and idempotent: the job row is claimed QUEUED →
RUNNING by compare-and-set, so a redelivered message returns quietly. Routed by name
(``feedback.labelstudio_*``) to the ``datasets`` queue, beside imports and dataset builds."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="feedback.labelstudio_job_run", acks_late=True, ignore_result=True)
def labelstudio_job_run_task(job_id: int) -> None:
    """Run one push, pull or file import (``feedback.labelstudio.services.job_run``)."""
    from feedback.labelstudio.services import job_run

    job_run(job_id=job_id)


@shared_task(name="feedback.labelstudio_sweep_orphaned", acks_late=True, ignore_result=True)
def labelstudio_sweep_orphaned_task() -> int:
    """Fail running jobs whose worker died, so none looks stuck (beat; see
    ``feedback.labelstudio.services.job_sweep_orphaned``)."""
    from feedback.labelstudio.services import job_sweep_orphaned

    return job_sweep_orphaned()
