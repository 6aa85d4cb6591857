"""Celery tasks for training runs. Thin: take an id, call one service, return quietly.

Imported by ``TrainingConfig.ready()`` so the worker registers them (Celery autodiscovers
``tasks`` modules only). Names ``training.train_*`` are routed to the ``training`` queue; run
that queue with ``-c 1 --max-tasks-per-child=1`` so each run has a fresh process and the
parent never touches CUDA. No late acks: a run is long; its state row, heartbeat and the
stale sweep handle a worker that dies.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="training.train_run", ignore_result=True)
def train_run_task(run_id: int) -> None:
    """Train a queued run. The compare-and-set QUEUED → RUNNING in ``run_execute`` makes a
    second delivery of the message a no-op."""
    from training.services_runs import run_execute

    run_execute(run_id=run_id)


@shared_task(name="training.runs_sweep_stale", acks_late=True, ignore_result=True)
def runs_sweep_stale_task() -> None:
    """Beat: fail RUNNING runs whose heartbeat went stale (their worker died)."""
    from training.services_runs import runs_fail_stale

    runs_fail_stale()
