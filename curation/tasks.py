"""Celery tasks for curation. Thin: take an id, call one service, return quietly."""

from __future__ import annotations

from celery import shared_task

from curation.services import imports


@shared_task(name="curation.import_job_run", acks_late=True, ignore_result=True)
def import_job_run_task(job_id: int) -> None:
    """Run a queued import (routed to the ``datasets`` queue by name). The service's
    compare-and-set (queued → validating) makes a redelivered message a no-op."""
    imports.import_job_run(job_id=job_id)


@shared_task(name="curation.queue_sweep_lapsed", acks_late=True, ignore_result=True)
def queue_sweep_lapsed_task() -> int:
    """Release lapsed leases so "in progress" counts stay honest (beat, every minute). The
    queue never depends on it: a claim takes a lapsed lease's place over by itself."""
    from curation.services.queue import queue_sweep_lapsed

    return queue_sweep_lapsed()


@shared_task(name="curation.import_sweep_orphaned", acks_late=True, ignore_result=True)
def import_sweep_orphaned_task() -> int:
    """Fail imports whose worker died mid-run, so they never look stuck (beat)."""
    return imports.import_jobs_fail_orphaned()
