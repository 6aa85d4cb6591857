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


# Closing the loop: evaluation rounds, retraining policies and cycles (beat) and the alert a
# failed cycle sends. Names stay off the routed prefixes: they run on ``default``.

CYCLE_ALERT_RETRIES = 6
CYCLE_ALERT_BACKOFF_S = 30


@shared_task(name="training.evaluation_rounds_check", acks_late=True, ignore_result=True)
def evaluation_rounds_check_task() -> dict:
    """Beat: fail rounds whose generation failed, make the items of rounds whose callback
    was lost, refresh judging rounds' counts and close those whose items are all decided."""
    from training.services.evaluation import evaluation_rounds_check

    return evaluation_rounds_check()


@shared_task(name="training.policies_check", acks_late=True, ignore_result=True)
def policies_check_task() -> int:
    """Beat: start a retraining cycle for each enabled policy that fires (one in flight per
    project, guaranteed by a constraint, however many beats race)."""
    from training.services.policies import policies_check

    return len(policies_check())


@shared_task(name="training.cycles_advance", acks_late=True, ignore_result=True)
def cycles_advance_task() -> int:
    """Beat: move each in-flight retraining cycle along (each step a compare-and-set)."""
    from training.services.policies import cycles_advance

    return cycles_advance()


@shared_task(
    name="training.cycle_alert_deliver",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=CYCLE_ALERT_RETRIES,
)
def cycle_alert_deliver_task(self, cycle_id: int) -> None:
    """POST a failed cycle's signed alert to the project's webhook, retrying with backoff."""
    from feedback.models import AlertWebhook
    from training.models import RetrainingCycle
    from training.services.policies import cycle_alert_deliver

    if cycle_alert_deliver(cycle_id=cycle_id):
        return
    project_id = RetrainingCycle.objects.filter(pk=cycle_id).values_list("project_id", flat=True)
    if not AlertWebhook.objects.filter(project_id__in=list(project_id)).exists():
        return
    if self.request.retries < self.max_retries:
        raise self.retry(countdown=CYCLE_ALERT_BACKOFF_S * 2**self.request.retries)


@shared_task(name="training.generate_job", ignore_result=True)
def generate_job_task(job_id: int) -> None:
    """Run a queued generation job (routed to the ``inference`` queue by name). The
    compare-and-set QUEUED → RUNNING in ``generation_job_execute`` makes a second delivery a
    no-op; no late acks (a job can be long): its heartbeat and the stale sweep cover a worker
    that dies."""
    from training.services.generation import generation_job_execute

    generation_job_execute(job_id)


@shared_task(name="training.generate_sweep_stale", acks_late=True, ignore_result=True)
def generate_sweep_stale_task() -> None:
    """Beat: fail RUNNING generation jobs whose heartbeat went stale (their worker died)."""
    from training.services.generation import generation_jobs_fail_stale

    generation_jobs_fail_stale()
