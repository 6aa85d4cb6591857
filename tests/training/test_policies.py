"""Retraining policies: settings, triggers (new decisions, drift), exactly one cycle when
several beats race, a cycle's steps with approval, and a failing step that stops the cycle
and alerts the project's webhook with a signed body."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from feedback.models import DriftAlert
from tests.training.loop_helpers import fake_adapter, publish_fake_adapter, tiny_model
from training.models import (
    CycleStatus,
    DatasetStatus,
    RetrainingCycle,
    RetrainingPolicy,
    RoundStatus,
    RunStatus,
)
from training.services.policies import (
    cycle_advance,
    cycle_alert_deliver,
    cycle_approve,
    cycles_advance,
    policies_check,
    policy_update,
)

pytestmark = pytest.mark.django_db

WEBHOOK_PORT = 18531


def enable(project, user, **fields) -> RetrainingPolicy:
    values = {"enabled": True, "min_new_decisions": None, "on_drift": False,
              "require_approval": False, **fields}  # fmt: skip
    return policy_update(project=project, user=user, **values)


def accept_items(project, expert, decide_item, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        decide_item(
            project,
            [(expert, "accept", {})],
            prompt=f"How do I change my plan, question {i}?",
            candidates=[(f"Open Billing and pick a plan, answer {i}.", "prod-model")],
        )


def test_only_admins_edit_the_policy_and_an_enabled_one_needs_a_trigger(project, personas):
    with pytest.raises(PermissionDenied):
        enable(project, personas["manager"], min_new_decisions=5)
    with pytest.raises(ValidationError) as exc:
        enable(project, personas["admin"])
    assert "needs a trigger" in exc.value.message_dict["enabled"][0]
    with pytest.raises(ValidationError):
        enable(project, personas["admin"], min_new_decisions=0)
    policy = enable(project, personas["admin"], min_new_decisions=5, on_drift=True)
    assert policy.enabled and policy.updated_by == personas["admin"]
    assert RetrainingPolicy.objects.get(project=project).min_new_decisions == 5


def test_a_policy_fires_on_enough_new_accepted_decisions(project, personas, experts, decide_item):
    fake_adapter(project)  # the run a cycle repeats, and the last dataset version
    enable(project, personas["admin"], min_new_decisions=3)
    accept_items(project, experts[0], decide_item, 2)
    assert policies_check() == []
    accept_items(project, experts[0], decide_item, 1, start=2)
    (cycle,) = policies_check()
    assert cycle.trigger == "decisions" and cycle.status == CycleStatus.RUNNING
    assert cycle.trigger_detail["new_accepted_decisions"] == 3
    assert cycle.trigger_detail["threshold"] == 3
    assert policies_check() == []  # one in flight already


def test_a_disabled_policy_or_a_project_without_a_run_never_fires(
    project, personas, experts, decide_item
):
    enable(project, personas["admin"], min_new_decisions=1)
    accept_items(project, experts[0], decide_item, 2)
    assert policies_check() == []  # nothing trained yet: nothing to repeat
    fake_adapter(project)
    accept_items(project, experts[0], decide_item, 1, start=5)
    policy_update(project=project, user=personas["admin"], enabled=False, min_new_decisions=1,
                  on_drift=False, require_approval=True)  # fmt: skip
    assert policies_check() == []


def drift_alert(project, *, minutes_ago: int = 0) -> DriftAlert:
    now = timezone.now() - timedelta(minutes=minutes_ago)
    return DriftAlert.objects.create(
        project=project, model="prod-model", metric="non_accept_rate",
        window_start=now - timedelta(days=7), window_end=now,
        baseline_start=now - timedelta(days=35), baseline_end=now - timedelta(days=7),
        baseline_value=0.1, current_value=0.3, baseline_n=200, current_n=200,
        statistic=5.1, p_value=1e-7, message="Correction rate rose from 10% to 30%.",
        created_at=now,
    )  # fmt: skip


def test_a_policy_fires_on_an_unhandled_drift_alert_once(project, personas):
    fake_adapter(project)
    enable(project, personas["admin"], on_drift=True)
    assert policies_check() == []
    alert = drift_alert(project)
    (cycle,) = policies_check()
    assert cycle.trigger == "drift" and cycle.trigger_detail["drift_alerts"] == [alert.pk]
    RetrainingCycle.objects.filter(pk=cycle.pk).update(status=CycleStatus.SUCCEEDED)
    assert policies_check() == []  # that alert was handled by the cycle
    later = drift_alert(project, minutes_ago=-1)
    (again,) = policies_check()
    assert again.trigger_detail["drift_alerts"] == [later.pk]


@pytest.mark.django_db(transaction=True)
def test_policies_fire_exactly_once_when_several_beats_run_at_once(
    project, personas, experts, decide_item
):
    fake_adapter(project)
    enable(project, personas["admin"], min_new_decisions=2, on_drift=True)
    accept_items(project, experts[0], decide_item, 3)
    drift_alert(project)
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    started: list[int] = []
    errors: list[BaseException] = []

    def beat():
        try:
            barrier.wait(timeout=10)
            started.extend(c.pk for c in policies_check())
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=beat) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(started) == 1
    assert RetrainingCycle.objects.filter(project=project).count() == 1


# ---- Steps ------------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory)


def test_a_cycle_builds_waits_for_approval_trains_and_starts_a_round(
    project, personas, experts, decide_item, build, tiny, compare_mode
):
    from training.services.datasets import dataset_version_build
    from training.services.runs import training_run_create

    admin = personas["admin"]
    accept_items(project, experts[0], decide_item, 6)
    first = build(project, admin, kinds=["sft"], eval_fraction=0.5, seed=3)
    assert first.status == DatasetStatus.SUCCEEDED
    template = training_run_create(
        user=admin, dataset_version=first, base_model=tiny, method="sft", config={"max_steps": 2}
    )
    publish_fake_adapter(template)
    enable(project, admin, min_new_decisions=2, require_approval=True)
    accept_items(project, experts[0], decide_item, 2, start=6)
    (cycle,) = policies_check()

    cycles_advance()
    cycle.refresh_from_db()
    version = cycle.dataset_version
    assert cycle.step == "dataset" and version.created_via == "policy"
    assert version.params == first.params and version.pk != first.pk  # same request, new data
    dataset_version_build(version_id=version.pk)  # what the datasets worker does
    cycles_advance()
    cycle.refresh_from_db()
    assert cycle.status == CycleStatus.AWAITING_APPROVAL and cycle.training_run is None
    assert cycles_advance() == 0  # waits for the admin

    with pytest.raises(PermissionDenied):
        cycle_approve(cycle=cycle, user=personas["manager"])
    cycle = cycle_approve(cycle=cycle, user=admin)
    run = cycle.training_run
    assert cycle.status == CycleStatus.RUNNING and cycle.step == "training"
    assert run.status == RunStatus.QUEUED and run.created_via == "policy"
    assert run.dataset_version_id == version.pk and run.base_model_id == tiny.pk
    assert run.method == template.method and run.config == template.config
    assert cycle.approved_by == admin

    publish_fake_adapter(run)  # what the training worker does
    cycles_advance()
    cycle.refresh_from_db()
    round_ = cycle.evaluation_round
    assert cycle.step == "evaluation" and round_.status == RoundStatus.GENERATING
    assert round_.trigger == "policy" and round_.subject == run.adapter
    assert round_.dataset_version_id == version.pk and round_.baseline_base_model_id == tiny.pk
    round_.status = RoundStatus.JUDGING
    round_.save()
    cycles_advance()
    cycle.refresh_from_db()
    assert cycle.status == CycleStatus.SUCCEEDED and cycle.finished_at


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_server():
    server = HTTPServer(("127.0.0.1", WEBHOOK_PORT), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _Hook.received
    server.shutdown()
    server.server_close()


def test_a_failing_step_stops_the_cycle_and_sends_a_signed_alert(
    project, personas, settings, webhook_server, django_capture_on_commit_callbacks
):
    from feedback.services.alerts import alert_webhook_set

    settings.REDLINE_WEBHOOK_ALLOW_PRIVATE = True
    hook = alert_webhook_set(
        project=project, url=f"http://127.0.0.1:{WEBHOOK_PORT}/hook", actor=personas["admin"]
    )
    fake_adapter(project)  # its dataset's filters select nothing in this project
    enable(project, personas["admin"], on_drift=True)
    drift_alert(project)
    (cycle,) = policies_check()
    with django_capture_on_commit_callbacks() as callbacks:
        cycle_advance(cycle_id=cycle.pk)
    cycle.refresh_from_db()
    assert cycle.status == CycleStatus.FAILED and cycle.finished_at
    assert cycle.error.startswith("Step dataset: ") and "nothing to build" in cycle.error
    assert len(callbacks) == 1  # the alert's delivery, queued once
    assert cycle_advance(cycle_id=cycle.pk) is None  # a stopped cycle goes no further
    assert cycles_advance() == 0

    assert cycle_alert_deliver(cycle_id=cycle.pk) is True
    ((headers, body),) = webhook_server
    expected = hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Redline-Signature"] == f"sha256={expected}"
    assert headers["X-Redline-Event"] == "retraining.failed"
    document = json.loads(body)
    assert document["event"] == "retraining.failed"
    assert document["cycle"]["id"] == cycle.pk and document["cycle"]["error"] == cycle.error
    assert document["cycle"]["trigger"] == "drift"
    # a new alert starts the next cycle, but not within the hour after a failure
    drift_alert(project, minutes_ago=-1)
    assert policies_check() == []
    RetrainingCycle.objects.filter(pk=cycle.pk).update(
        finished_at=timezone.now() - timedelta(minutes=61)
    )
    assert len(policies_check()) == 1


def test_a_failed_training_run_fails_the_cycle(project, personas):
    adapter = fake_adapter(project)
    enable(project, personas["admin"], on_drift=True)
    drift_alert(project)
    (cycle,) = policies_check()
    from training.models import TrainingRun

    failed = TrainingRun.objects.create(
        dataset_version=adapter.run.dataset_version, base_model=adapter.run.base_model,
        method="sft", config={}, status=RunStatus.FAILED, error="CUDA out of memory",
    )  # fmt: skip
    RetrainingCycle.objects.filter(pk=cycle.pk).update(
        step="training", dataset_version=adapter.run.dataset_version, training_run=failed
    )
    cycle_advance(cycle_id=cycle.pk)
    cycle.refresh_from_db()
    assert cycle.status == CycleStatus.FAILED and "CUDA out of memory" in cycle.error
