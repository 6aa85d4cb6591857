"""Retraining policies and the automated cycles they start (celery beat, off by default).

A project's ``RetrainingPolicy`` fires on "at least N new accepted decisions since the last
dataset version" and/or on an unhandled drift alert. ``policies_check`` (beat) starts a
``RetrainingCycle`` for each policy that fires; the partial unique constraint
``retrainingcycle_one_in_flight`` keeps one cycle in flight per project even when several
beats race (the loser's insert raises IntegrityError and it moves on).

``cycles_advance`` (beat) moves each in-flight cycle one step at a time, every step a
compare-and-set on the cycle row (locked, ``SKIP LOCKED``, so concurrent beats never do a
step twice):

1. ``dataset``: ask for a dataset version with the template run's version's parameters
   (``dataset_version_request``; the same decisions give back the same version), wait
   until it is built;
2. ``training``: with ``require_approval``, wait (AWAITING_APPROVAL) until an admin approves;
   then queue a run with the template run's method and settings on the current base model
   (the promoted model's base, else the template run's), wait until it succeeds;
3. ``evaluation``: start an evaluation round of the new adapter against the promoted model
   (the base model when nothing is promoted); the cycle SUCCEEDS once the round is being
   judged (the verdict is the experts', and promotion stays an admin's decision).

The *template run* is the project's latest succeeded training run: a project that has never
trained an adapter has nothing to repeat, and its policy waits. Any failure stops the cycle
(FAILED with the error) and sends a signed alert to the project's webhook
(``cycle_alert_deliver``, the same signature as drift alerts).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from curation.models import Project
from feedback.models import AlertWebhook, DriftAlert, ItemOutcome, Outcome
from training.models import (
    CycleStatus,
    DatasetStatus,
    DatasetVersion,
    RetrainingCycle,
    RetrainingPolicy,
    RoundStatus,
    RunStatus,
    TrainingRun,
)
from training.services.promotion import require_admin

logger = logging.getLogger(__name__)

MIN_NEW_DECISIONS_MAX = 10_000_000
VIA = "policy"
# After a failed cycle a policy waits this long before it may start another, so a step that
# keeps failing (an empty selection, a broken base model) alerts once an hour, not every beat.
RETRY_AFTER = timedelta(hours=1)


# ---- The policy -------------------------------------------------------------------------------


def policy_for(*, project: Project) -> RetrainingPolicy:
    """The project's policy (an unsaved, disabled one when it has none)."""
    return RetrainingPolicy.objects.filter(project=project).first() or RetrainingPolicy(
        project=project
    )


def policy_update(
    *,
    project: Project,
    user,
    enabled: bool,
    min_new_decisions: int | None,
    on_drift: bool,
    require_approval: bool,
) -> RetrainingPolicy:
    """Set the project's retraining policy (admins: it launches training). An enabled policy
    needs at least one trigger. Raises PermissionDenied, ValidationError keyed by field."""
    require_admin(user)
    if min_new_decisions in ("", None):
        min_new_decisions = None
    elif (
        isinstance(min_new_decisions, bool)
        or not isinstance(min_new_decisions, int)
        or not 1 <= min_new_decisions <= MIN_NEW_DECISIONS_MAX
    ):
        raise ValidationError(
            {"min_new_decisions": ["A whole number of decisions, 1 or more (empty: off)."]}
        )
    for name, value in (
        ("enabled", enabled),
        ("on_drift", on_drift),
        ("require_approval", require_approval),
    ):
        if not isinstance(value, bool):
            raise ValidationError({name: ["True or false."]})
    if enabled and min_new_decisions is None and not on_drift:
        raise ValidationError(
            {"enabled": ["An enabled policy needs a trigger: new decisions, drift, or both."]}
        )
    policy, _ = RetrainingPolicy.objects.update_or_create(
        project=project,
        defaults={
            "enabled": enabled,
            "min_new_decisions": min_new_decisions,
            "on_drift": on_drift,
            "require_approval": require_approval,
            "updated_by": user,
        },
    )
    return policy


# ---- Deciding whether a policy fires ----------------------------------------------------------


def template_run(*, project: Project) -> TrainingRun | None:
    """The run a cycle repeats: the project's latest succeeded run."""
    return (
        TrainingRun.objects.filter(
            dataset_version__project=project, status=RunStatus.SUCCEEDED, adapter__isnull=False
        )
        .select_related("dataset_version", "base_model")
        .order_by("-created_at", "-id")
        .first()
    )


def last_dataset_version(*, project: Project) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.filter(project=project)
        .exclude(status=DatasetStatus.FAILED)
        .order_by("-created_at", "-id")
        .first()
    )


def new_decisions_count(*, project: Project) -> int:
    """Accepted final decisions made after the last dataset version was asked for."""
    outcomes = ItemOutcome.objects.filter(project=project, outcome=Outcome.ACCEPTED)
    last = last_dataset_version(project=project)
    if last is not None:
        outcomes = outcomes.filter(decided_at__gt=last.created_at)
    return outcomes.count()


def unhandled_drift_alerts(*, project: Project):
    """Drift alerts newer than the project's last cycle (any outcome): a cycle handles the
    alerts raised before it started. With no cycle yet, alerts newer than the last dataset
    version (older ones were raised on data that version already saw)."""
    alerts = DriftAlert.objects.filter(project=project)
    last_cycle = RetrainingCycle.objects.filter(project=project).aggregate(t=Max("created_at"))
    since = last_cycle["t"]
    if since is None:
        last = last_dataset_version(project=project)
        since = last.created_at if last else None
    if since is not None:
        alerts = alerts.filter(created_at__gt=since)
    return alerts.order_by("-created_at", "-id")


def policy_triggers(*, policy: RetrainingPolicy) -> tuple[str, dict[str, Any]] | None:
    """``(trigger, detail)`` when the policy fires now, else None."""
    project = policy.project
    if template_run(project=project) is None:
        return None
    if policy.min_new_decisions:
        count = new_decisions_count(project=project)
        if count >= policy.min_new_decisions:
            last = last_dataset_version(project=project)
            return "decisions", {
                "new_accepted_decisions": count,
                "threshold": policy.min_new_decisions,
                "since_dataset_version": last.pk if last else None,
            }
    if policy.on_drift:
        alerts = list(unhandled_drift_alerts(project=project)[:20])
        if alerts:
            return "drift", {
                "drift_alerts": [a.pk for a in alerts],
                "message": alerts[0].message[:500],
            }
    return None


def policies_check(*, now=None) -> list[RetrainingCycle]:
    """Beat: start a cycle for every enabled policy that fires and has none in flight.

    Safe under concurrency: the partial unique constraint allows one in-flight cycle per
    project, so of several beats racing only one insert succeeds; the others get
    IntegrityError (inside a savepoint) and skip the project. A project whose last cycle
    failed less than ``RETRY_AFTER`` ago is skipped too. Returns the cycles started.
    """
    now = now or timezone.now()
    started = []
    policies = RetrainingPolicy.objects.filter(enabled=True).select_related("project")
    for policy in policies:
        if RetrainingCycle.objects.filter(
            project=policy.project, status__in=RetrainingCycle.IN_FLIGHT
        ).exists():
            continue
        if RetrainingCycle.objects.filter(
            project=policy.project,
            status=CycleStatus.FAILED,
            finished_at__gt=now - RETRY_AFTER,
        ).exists():
            continue  # a cycle failed within the hour: let someone look first
        fired = policy_triggers(policy=policy)
        if fired is None:
            continue
        trigger, detail = fired
        run = template_run(project=policy.project)
        detail = {**detail, "template_run": run.pk, "require_approval": policy.require_approval}
        try:
            with transaction.atomic():
                cycle = RetrainingCycle.objects.create(
                    project=policy.project, trigger=trigger, trigger_detail=detail
                )
        except IntegrityError:
            logger.info("project %s: a cycle is already in flight", policy.project_id)
            continue
        logger.info("project %s: retraining cycle %s (%s)", policy.project_id, cycle.pk, trigger)
        started.append(cycle)
    return started


# ---- Advancing cycles -------------------------------------------------------------------------


def previous_params(version: DatasetVersion) -> dict[str, Any]:
    """A version's canonical parameters as a new request takes them: its kinds, split and
    options, and its filters without the end date (a window that ended would leave out every
    new decision)."""
    params = version.params or {}
    filters = dict(params.get("filters") or {})
    filters.pop("date_to", None)
    return {
        "kinds": params.get("kinds"),
        "eval_fraction": params.get("eval_fraction"),
        "seed": params.get("seed"),
        **filters,
        **(params.get("options") or {}),
    }


def _cycle_fail(cycle: RetrainingCycle, error: str) -> bool:
    """Stop the cycle (FAILED) and queue its alert. Compare-and-set: once only."""
    with transaction.atomic():
        failed = RetrainingCycle.objects.filter(
            pk=cycle.pk, status__in=RetrainingCycle.IN_FLIGHT
        ).update(status=CycleStatus.FAILED, error=error[:4000], finished_at=timezone.now())
        if failed:
            logger.warning("retraining cycle %s failed: %s", cycle.pk, error)
            cycle_alert_queue(cycle_id=cycle.pk, project_id=cycle.project_id)
    return bool(failed)


def _step_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return " ".join(exc.messages)
    return f"{type(exc).__name__}: {exc}"


def _current_base(project: Project, run: TrainingRun):
    from training.services.promotion import promotion_current

    current = promotion_current(project=project)
    return current.base_model if current is not None else run.base_model


def _launch_training(cycle: RetrainingCycle) -> None:
    from training.services.runs import training_run_create

    template = TrainingRun.objects.select_related("base_model").get(
        pk=cycle.trigger_detail["template_run"]
    )
    run = training_run_create(
        user=cycle.approved_by,
        dataset_version=cycle.dataset_version,
        base_model=_current_base(cycle.project, template),
        method=template.method,
        config=dict(template.config),
        via=VIA,
    )
    cycle.training_run = run
    cycle.step = "training"
    cycle.status = CycleStatus.RUNNING
    cycle.save(update_fields=["training_run", "step", "status"])


def _advance(cycle: RetrainingCycle) -> None:
    """One step of one locked cycle (see the module docstring). Raises on failure."""
    from training.services.datasets import dataset_version_request
    from training.services.evaluation import evaluation_round_create
    from training.services.promotion import promotion_current

    if cycle.step == "dataset":
        if cycle.dataset_version_id is None:
            template = TrainingRun.objects.select_related("dataset_version").get(
                pk=cycle.trigger_detail["template_run"]
            )
            version, _ = dataset_version_request(
                project=cycle.project,
                user=None,
                params=previous_params(template.dataset_version),
                via=VIA,
            )
            cycle.dataset_version = version
            cycle.save(update_fields=["dataset_version"])
            return
        version = cycle.dataset_version
        if version.status == DatasetStatus.FAILED:
            raise RuntimeError(f"Dataset version {version.pk} failed to build: {version.error}")
        if version.status != DatasetStatus.SUCCEEDED:
            return
        if cycle.trigger_detail.get("require_approval") and cycle.approved_by_id is None:
            cycle.step = "training"
            cycle.status = CycleStatus.AWAITING_APPROVAL
            cycle.save(update_fields=["step", "status"])
            return
        _launch_training(cycle)
        return
    if cycle.step == "training":
        if cycle.status == CycleStatus.AWAITING_APPROVAL:
            return
        if cycle.training_run_id is None:
            _launch_training(cycle)
            return
        run = cycle.training_run
        if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RuntimeError(f"Training run {run.pk} {run.status}: {run.error}".rstrip(": "))
        if run.status != RunStatus.SUCCEEDED:
            return
        adapter = run.adapter
        baseline = "promoted" if promotion_current(project=cycle.project) else "base"
        round_ = evaluation_round_create(
            subject=adapter,
            baseline=baseline,
            dataset_version=cycle.dataset_version,
            created_by=cycle.approved_by,
            trigger=VIA,
        )
        cycle.evaluation_round = round_
        cycle.step = "evaluation"
        cycle.save(update_fields=["evaluation_round", "step"])
        return
    if cycle.step == "evaluation":
        round_ = cycle.evaluation_round
        if round_.status in (RoundStatus.FAILED, RoundStatus.CANCELLED):
            raise RuntimeError(f"Evaluation round {round_.pk} {round_.status}: {round_.error}")
        if round_.status in (RoundStatus.JUDGING, RoundStatus.COMPLETE):
            cycle.status = CycleStatus.SUCCEEDED
            cycle.finished_at = timezone.now()
            cycle.save(update_fields=["status", "finished_at"])


def cycle_advance(*, cycle_id: int) -> RetrainingCycle | None:
    """Advance one in-flight cycle by at most one step, under its row lock (SKIP LOCKED:
    a cycle another beat is advancing is left to it). A failing step fails the cycle."""
    error = None
    with transaction.atomic():
        cycle = (
            RetrainingCycle.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related(
                "project", "dataset_version", "training_run__adapter", "evaluation_round"
            )
            .filter(pk=cycle_id, status__in=RetrainingCycle.IN_FLIGHT)
            .first()
        )
        if cycle is None:
            return None
        try:
            with transaction.atomic():
                _advance(cycle)
        except Exception as exc:  # any failure stops the cycle, with what went wrong
            logger.exception("retraining cycle %s: step %s failed", cycle_id, cycle.step)
            error = f"Step {cycle.step}: {_step_error(exc)}"
    if error is not None:
        _cycle_fail(cycle, error)
    cycle = RetrainingCycle.objects.filter(pk=cycle_id).first()
    return cycle


def cycles_advance(*, max_steps: int = 4) -> int:
    """Beat: advance every in-flight cycle (up to ``max_steps`` steps each, so one beat can
    request a dataset and, when it is already built, queue the run). Returns the steps
    taken."""
    steps = 0
    for cycle_id in RetrainingCycle.objects.filter(status=CycleStatus.RUNNING).values_list(
        "pk", flat=True
    ):
        for _ in range(max_steps):
            before = (
                RetrainingCycle.objects.filter(pk=cycle_id)
                .values(
                    "status", "step", "dataset_version_id", "training_run_id", "evaluation_round_id"
                )
                .first()
            )
            after_cycle = cycle_advance(cycle_id=cycle_id)
            if after_cycle is None:
                break
            after = (
                RetrainingCycle.objects.filter(pk=cycle_id)
                .values(
                    "status", "step", "dataset_version_id", "training_run_id", "evaluation_round_id"
                )
                .first()
            )
            if after == before:
                break
            steps += 1
            if after_cycle.status != CycleStatus.RUNNING:
                break
    return steps


def cycle_approve(*, cycle: RetrainingCycle, user) -> RetrainingCycle:
    """An admin approves the training step of a cycle waiting for it; the run is queued at
    once. Raises ValidationError when the cycle is not waiting."""
    require_admin(user)
    with transaction.atomic():
        updated = RetrainingCycle.objects.filter(
            pk=cycle.pk, status=CycleStatus.AWAITING_APPROVAL
        ).update(status=CycleStatus.RUNNING, approved_by=user)
    if not updated:
        raise ValidationError({"status": ["This cycle is not waiting for approval."]})
    return cycle_advance(cycle_id=cycle.pk) or RetrainingCycle.objects.get(pk=cycle.pk)


def cycle_cancel(*, cycle: RetrainingCycle, user) -> RetrainingCycle:
    """Stop an in-flight cycle (what it already queued runs on; nothing further starts)."""
    require_admin(user)
    updated = RetrainingCycle.objects.filter(
        pk=cycle.pk, status__in=RetrainingCycle.IN_FLIGHT
    ).update(status=CycleStatus.CANCELLED, finished_at=timezone.now())
    if not updated:
        raise ValidationError({"status": ["This cycle has already ended."]})
    return RetrainingCycle.objects.get(pk=cycle.pk)


# ---- Failure alerts ---------------------------------------------------------------------------

EVENT = "retraining.failed"


def cycle_alert_queue(*, cycle_id: int, project_id: int) -> None:
    """Queue the failure alert's delivery when the transaction commits (none without a
    webhook)."""
    from training.tasks import cycle_alert_deliver_task

    if AlertWebhook.objects.filter(project_id=project_id).exists():
        cycle_alert_deliver_task.delay_on_commit(cycle_id)


def cycle_alert_body(cycle: RetrainingCycle) -> bytes:
    """The exact bytes POSTed: ``{"event": "retraining.failed", "cycle": {...}}``."""
    document = {
        "event": EVENT,
        "cycle": {
            "id": cycle.pk,
            "project": cycle.project.slug,
            "trigger": cycle.trigger,
            "trigger_detail": cycle.trigger_detail,
            "step": cycle.step,
            "error": cycle.error,
            "dataset_version": cycle.dataset_version_id,
            "training_run": cycle.training_run_id,
            "evaluation_round": cycle.evaluation_round_id,
            "created_at": cycle.created_at.isoformat(),
            "finished_at": cycle.finished_at.isoformat() if cycle.finished_at else None,
            "retraining_path": reverse("training:retraining", args=[cycle.project.slug]),
        },
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def cycle_alert_deliver(*, cycle_id: int) -> bool:
    """POST a failed cycle's alert to the project's webhook, signed like drift alerts
    (``X-Redline-Signature: sha256=<HMAC of the body>``, ``X-Redline-Event:
    retraining.failed``, ``X-Redline-Delivery: cycle-<id>``), through the same guarded
    client (no private addresses unless allowed, no redirects, a timeout). True once
    delivered; a delivery problem is logged and returns False (the task retries)."""
    from feedback.services import alerts

    cycle = RetrainingCycle.objects.select_related("project").filter(pk=cycle_id).first()
    if cycle is None or cycle.status != CycleStatus.FAILED:
        return False
    webhook = AlertWebhook.objects.filter(project_id=cycle.project_id).first()
    if webhook is None:
        return False
    body = cycle_alert_body(cycle)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Redline-Webhook/1",
        "X-Redline-Event": EVENT,
        "X-Redline-Delivery": f"cycle-{cycle.pk}",
        alerts.SIGNATURE_HEADER: alerts.webhook_signature(secret=webhook.secret, body=body),
    }
    try:
        alerts.webhook_destination_check(webhook.url)
        status = alerts.webhook_post(webhook.url, body, headers)
        if not 200 <= status < 300:
            raise alerts.DeliveryFailed(f"HTTP {status} from the webhook")
    except alerts.DeliveryFailed as exc:
        logger.warning("retraining cycle %s: alert not delivered: %s", cycle.pk, exc)
        return False
    return True
