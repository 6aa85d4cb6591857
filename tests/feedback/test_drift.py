"""Drift detection on synthetic decision streams, alert idempotency, and signed webhook
delivery to a real local HTTP server (directly, and through the real broker and worker)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from curation.services.queue import queue_claim_next
from curation.services.settings import project_settings_update
from feedback.models import AlertWebhook, DriftAlert
from feedback.services import alerts as alert_services
from feedback.services import review_submit
from feedback.services.drift import (
    chi2_sf,
    chi_square_homogeneity,
    drift_check,
    drift_check_project,
    drift_evaluate,
    drift_windows,
    normal_sf,
    two_proportion_z_test,
)
from feedback.tasks import DELIVERY_RETRIES, alert_deliver_task, drift_check_task
from tests.factories import item_add

TONE = {
    "key": "tone",
    "prompt": "Tone of the answer?",
    "type": "single_choice",
    "options": ["neutral", "friendly", "rude"],
}


# ---- Statistics, against values from statistical tables --------------------------------------


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),  # the 95% critical values
        (5.991464547107979, 2, 0.05),
        (6.634896601021214, 1, 0.01),
        (11.344866730144373, 3, 0.01),
        (18.307038053275146, 10, 0.05),
        (0.454936423119572, 1, 0.5),  # the median, df = 1 (series branch)
        (9.341817765591966, 10, 0.5),
        (0.0, 4, 1.0),
    ],
)
def test_the_chi_square_tail_matches_the_tables(x, df, p):
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("x", [0.1, 1.0, 2.9, 3.1, 10.0, 50.0, 200.0])
def test_the_chi_square_tail_with_two_degrees_of_freedom_is_exp_of_minus_half_x(x):
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)


def test_the_normal_tail_matches_the_tables():
    assert normal_sf(1.959963984540054) == pytest.approx(0.025, rel=1e-12)
    assert normal_sf(2.326347874040841) == pytest.approx(0.01, rel=1e-12)
    assert normal_sf(0.0) == 0.5


def test_a_shift_from_10_to_30_percent_at_n_200_is_z_5():
    # pooled p = 0.2, se = sqrt(0.2 * 0.8 * (1/200 + 1/200)) = 0.04, z = 0.2 / 0.04 = 5
    z, p = two_proportion_z_test(x_base=20, n_base=200, x_cur=60, n_cur=200)
    assert z == pytest.approx(5.0)
    assert p == pytest.approx(2.866515718791939e-07, rel=1e-9)


def test_10_against_12_percent_at_n_100_is_noise():
    # pooled p = 0.11, se = sqrt(0.11 * 0.89 * 0.02) = 0.044249, z = 0.02 / 0.044249 = 0.452:
    # p = 0.326, far above the 0.01 threshold
    z, p = two_proportion_z_test(x_base=10, n_base=100, x_cur=12, n_cur=100)
    assert z == pytest.approx(0.45198, abs=1e-4)
    assert p == pytest.approx(0.32564, abs=1e-4)


def test_the_rate_test_is_one_sided_and_needs_variation():
    assert two_proportion_z_test(x_base=60, n_base=200, x_cur=20, n_cur=200)[1] > 0.99
    assert two_proportion_z_test(x_base=0, n_base=50, x_cur=0, n_cur=50) == (0.0, 1.0)


def test_chi_square_homogeneity_on_a_hand_computed_table():
    # expected a: 40 / 40, b: 60 / 60 → 2 * 10²/40 + 2 * 10²/60 = 8.333, df 1
    result = chi_square_homogeneity({"a": 50, "b": 50}, {"a": 30, "b": 70})
    assert result.statistic == pytest.approx(25 / 3)
    assert result.df == 1
    assert result.p_value == pytest.approx(chi2_sf(25 / 3, 1)) and result.p_value < 0.01


def test_rare_answers_are_pooled_until_every_expected_count_is_five():
    # c and d would expect 1.5 and 1 per side: pooled into "(other)" (expected 2.5 per side:
    # still too small), which then takes in the smallest category left (b)
    result = chi_square_homogeneity({"a": 40, "b": 7, "c": 2, "d": 1}, {"a": 40, "b": 9, "c": 1})
    assert result.categories == ["a", "(other)"]
    assert result.baseline == [40, 10] and result.current == [40, 10]
    assert result.df == 1
    assert chi_square_homogeneity({"a": 10}, {"a": 12}) is None


# ---- Streams --------------------------------------------------------------------------------


def stream(project, expert, model, *, at, accept=0, correct=0, reject=0, tones=None):
    """Decisions on fresh single-output items of ``model``, submitted through the queue and
    review services as if made at ``at`` (one second apart)."""
    verdicts = ["accept"] * accept + ["correct"] * correct + ["reject"] * reject
    for i, verdict in enumerate(verdicts):
        item_add(project, candidates=[("The answer is 42.", model)])
        claim = queue_claim_next(project=project, expert=expert)
        fields = {"corrected_output": "The answer is 43."} if verdict == "correct" else {}
        if tones is not None:
            fields["labels"] = {"tone": tones[i]}
        review_submit(
            item=claim.item,
            expert=expert,
            verdict=verdict,
            now=at + dt.timedelta(seconds=i),
            **fields,
        )


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def times(now):
    """A moment in the current window and one in the baseline window."""
    windows = drift_windows(as_of=now)
    assert windows.start <= now - dt.timedelta(days=2) < windows.end
    assert windows.baseline_start <= now - dt.timedelta(days=14) < windows.baseline_end
    return {"current": now - dt.timedelta(days=2), "baseline": now - dt.timedelta(days=14)}


def drifting(project, expert, times, model="support-gpt"):
    """Baseline 10% corrections or rejections, current 30%, n = 200 in each window."""
    stream(project, expert, model, at=times["baseline"], accept=180, correct=12, reject=8)
    stream(project, expert, model, at=times["current"], accept=140, correct=40, reject=20)


def small_drift(project, expert, times, model="support-gpt"):
    """Just over the minimum sample: 4 of 40 rejected before, 24 of 40 now."""
    stream(project, expert, model, at=times["baseline"], accept=36, reject=4)
    stream(project, expert, model, at=times["current"], accept=16, reject=24)


def test_a_real_shift_raises_one_alert_with_the_test_figures(db, project, personas, times, now):
    drifting(project, personas["expert"], times)
    alerts = drift_check(as_of=now)
    assert len(alerts) == 1
    alert = DriftAlert.objects.get()
    assert (alert.model, alert.metric) == ("support-gpt", "non_accept_rate")
    assert (alert.baseline_value, alert.current_value) == (pytest.approx(0.1), pytest.approx(0.3))
    assert (alert.baseline_n, alert.current_n) == (200, 200)
    assert alert.statistic == pytest.approx(5.0)
    assert alert.p_value == pytest.approx(2.8665e-07, rel=1e-3)
    windows = drift_windows(as_of=now)
    assert (alert.window_start, alert.window_end) == (windows.start, windows.end)
    assert (alert.baseline_start, alert.baseline_end) == (windows.baseline_start, windows.start)
    assert "rose from 10.0% (n=200" in alert.message and "to 30.0% (n=200" in alert.message
    assert alert.details["baseline_count"] == 20 and alert.details["current_count"] == 60
    assert alert.delivered_at is None and alert.delivery_attempts == 0


def test_noise_of_the_stated_size_raises_nothing(db, project, personas, times, now):
    expert = personas["expert"]
    stream(project, expert, "support-gpt", at=times["baseline"], accept=90, correct=6, reject=4)
    stream(project, expert, "support-gpt", at=times["current"], accept=88, correct=7, reject=5)
    assert drift_check(as_of=now) == []
    _, (finding,) = drift_evaluate(project=project, as_of=now)
    assert (finding.baseline_value, finding.current_value) == (0.1, 0.12)
    assert finding.p_value == pytest.approx(0.3256, abs=1e-3)
    assert not finding.significant and not DriftAlert.objects.exists()


def test_below_thirty_decisions_a_window_is_not_tested(db, project, personas, times, now):
    expert = personas["expert"]
    stream(project, expert, "support-gpt", at=times["baseline"], accept=200)
    stream(project, expert, "support-gpt", at=times["current"], reject=29)
    _, (finding,) = drift_evaluate(project=project, as_of=now)
    assert finding.current_value == 1.0 and finding.p_value is None
    assert finding.note == "needs 30 decisions in each window"
    assert drift_check(as_of=now) == []


def test_an_improvement_raises_nothing(db, project, personas, times, now):
    expert = personas["expert"]
    stream(project, expert, "support-gpt", at=times["baseline"], accept=140, correct=60)
    stream(project, expert, "support-gpt", at=times["current"], accept=190, correct=10)
    assert drift_check(as_of=now) == []


def test_each_model_version_is_tested_against_its_own_baseline(db, project, personas, times, now):
    expert = personas["expert"]
    drifting(project, expert, times, model="support-gpt+lora-3")
    stream(project, expert, "support-gpt", at=times["baseline"], accept=60, reject=40)
    stream(project, expert, "support-gpt", at=times["current"], accept=60, reject=40)
    drift_check(as_of=now)
    assert list(DriftAlert.objects.values_list("model", flat=True)) == ["support-gpt+lora-3"]


def test_a_shift_in_label_answers_raises_a_chi_square_alert(db, project, personas, times, now):
    project_settings_update(project=project, label_schema=[TONE])
    project.refresh_from_db()
    expert = personas["expert"]
    before = ["neutral"] * 70 + ["friendly"] * 25 + ["rude"] * 5
    after = ["neutral"] * 40 + ["friendly"] * 30 + ["rude"] * 30
    stream(project, expert, "support-gpt", at=times["baseline"], accept=100, tones=before)
    stream(project, expert, "support-gpt", at=times["current"], accept=100, tones=after)
    drift_check(as_of=now)
    alert = DriftAlert.objects.get()
    assert alert.metric == "labels:tone"
    # 2 × 3 table; expected neutral 55/55, friendly 27.5/27.5, rude 17.5/17.5
    statistic = 2 * (15**2 / 55 + 2.5**2 / 27.5 + 12.5**2 / 17.5)
    assert alert.statistic == pytest.approx(statistic)
    assert alert.p_value == pytest.approx(chi2_sf(statistic, 2))
    assert alert.details["df"] == 2
    assert alert.details["baseline"] == {"friendly": 25, "neutral": 70, "rude": 5}
    assert alert.current_value == pytest.approx(0.3)  # total variation distance
    assert "Answers to 'tone' on support-gpt shifted" in alert.message


def test_steady_label_answers_raise_nothing(db, project, personas, times, now):
    project_settings_update(project=project, label_schema=[TONE])
    project.refresh_from_db()
    expert = personas["expert"]
    before = ["neutral"] * 60 + ["friendly"] * 30 + ["rude"] * 10
    after = ["neutral"] * 56 + ["friendly"] * 32 + ["rude"] * 12
    stream(project, expert, "support-gpt", at=times["baseline"], accept=100, tones=before)
    stream(project, expert, "support-gpt", at=times["current"], accept=100, tones=after)
    assert drift_check(as_of=now) == []
    labels = [
        f for f in drift_evaluate(project=project, as_of=now)[1] if f.metric != "non_accept_rate"
    ]
    assert labels[0].p_value > 0.5


# ---- Idempotency ----------------------------------------------------------------------------


def test_running_the_check_twice_does_not_repeat_an_alert(db, project, personas, times, now):
    drifting(project, personas["expert"], times)
    assert len(drift_check(as_of=now)) == 1
    assert drift_check(as_of=now) == []
    assert drift_check(as_of=now + dt.timedelta(hours=3)) == []
    assert drift_check_task.apply().get() == 0
    assert DriftAlert.objects.count() == 1


def test_a_persisting_drift_is_alerted_again_only_a_window_later(db, project, personas, now):
    expert = personas["expert"]
    today = drift_windows(as_of=now).end - dt.timedelta(days=1)  # midnight

    def noon(days_ago: int):
        return today - dt.timedelta(days=days_ago) + dt.timedelta(hours=12)

    # 10% corrections for four weeks, then 40% rejections for the last eight days
    for days in range(36, 8, -1):
        stream(project, expert, "m", at=noon(days), accept=9, correct=1)
    for days in range(8, 0, -1):
        stream(project, expert, "m", at=noon(days), accept=12, reject=8)
    # 7 days ago the window holds two drifting days: 21 of 90 (23%) against 23 of 230 (10%)
    (first,) = drift_check(as_of=noon(7))
    assert (first.current_n, first.baseline_n) == (90, 230)
    for days in range(6, 0, -1):  # these windows overlap the first alert's: no repeat
        assert drift_check(as_of=noon(days)) == []
    (again,) = drift_check(as_of=noon(0))  # a whole window later
    assert again.window_start == first.window_end
    assert DriftAlert.objects.count() == 2


def test_concurrent_checks_write_one_alert(transactional_db, project, personas, times, now):
    small_drift(project, personas["expert"], times)
    barrier = threading.Barrier(4)
    created, failures = [], []

    def run():
        try:
            barrier.wait()
            created.extend(drift_check(as_of=now))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(created) == 1
    assert DriftAlert.objects.count() == 1


# ---- Webhooks -------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what is POSTed to it."""

    def __init__(self, status=200, delay=0.0, location=None):
        self.received: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((dict(self.headers), body))
                time.sleep(delay)
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/redline"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    servers = []

    def make(**kwargs):
        server = Receiver(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def allow_local(settings):
    settings.REDLINE_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def alert(db, project, personas, times, now):
    small_drift(project, personas["expert"], times)
    (created,) = drift_check(as_of=now)
    return created


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What a receiver does (docs/monitoring.md)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Redline-Signature"])


def test_an_alert_is_posted_signed_and_marked_delivered(
    project, personas, alert, receiver, allow_local
):
    server = receiver()
    webhook = alert_services.alert_webhook_set(
        project=project, url=server.url, actor=personas["manager"]
    )
    assert alert_services.alert_deliver(alert_id=alert.pk) is True

    ((headers, body),) = server.received
    assert verify(webhook.secret, headers, body)
    assert not verify("another secret", headers, body)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Redline-Event"] == "drift.alert"
    assert headers["X-Redline-Delivery"] == str(alert.pk)
    document = json.loads(body)
    assert document["event"] == "drift.alert"
    sent = document["alert"]
    assert (sent["id"], sent["project"], sent["model"]) == (alert.pk, project.slug, "support-gpt")
    assert (sent["metric"], sent["baseline_n"], sent["current_n"]) == ("non_accept_rate", 40, 40)
    assert sent["current_value"] == pytest.approx(0.6) and sent["p_value"] < 1e-5
    assert sent["monitoring_path"] == f"/projects/{project.slug}/monitoring/"
    assert webhook.secret not in body.decode()
    alert.refresh_from_db()
    assert alert.delivered_at is not None and alert.delivery_error == ""
    assert alert.delivery_attempts == 1
    # delivered once: a redelivered task does not post again
    assert alert_services.alert_deliver(alert_id=alert.pk) is True
    assert len(server.received) == 1


def test_a_new_alert_queues_its_delivery_after_commit(
    db, project, personas, times, now, django_capture_on_commit_callbacks, monkeypatch
):
    alert_services.alert_webhook_set(
        project=project, url="https://hooks.example.com/x", actor=personas["manager"]
    )
    small_drift(project, personas["expert"], times)
    queued = []
    monkeypatch.setattr(alert_deliver_task, "delay", lambda alert_id: queued.append(alert_id))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        (alert,) = drift_check(as_of=now)
        assert queued == []  # nothing is sent from inside the transaction
    assert len(callbacks) == 1
    callbacks[0]()
    assert queued == [alert.pk]


def test_without_a_webhook_nothing_is_queued(
    db, project, personas, times, now, django_capture_on_commit_callbacks
):
    small_drift(project, personas["expert"], times)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert len(drift_check(as_of=now)) == 1
    assert callbacks == []


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.mark.parametrize(
    ("server_kwargs", "error"),
    [
        (None, "Could not reach the webhook"),
        ({"status": 500}, "HTTP 500 from the webhook"),
        ({"status": 302, "location": "http://169.254.169.254/"}, "HTTP 302 from the webhook"),
        ({"status": 200, "delay": 2.0}, "timed out"),
    ],
)
def test_a_failed_delivery_is_recorded_not_raised(
    project, personas, alert, receiver, allow_local, monkeypatch, server_kwargs, error
):
    monkeypatch.setattr(alert_services, "WEBHOOK_TIMEOUT_S", 0.5)
    url = closed_port_url() if server_kwargs is None else receiver(**server_kwargs).url
    alert_services.alert_webhook_set(project=project, url=url, actor=personas["manager"])
    assert alert_services.alert_deliver(alert_id=alert.pk) is False
    alert.refresh_from_db()
    assert error in alert.delivery_error
    assert alert.delivered_at is None and alert.delivery_attempts == 1


def test_private_addresses_are_refused_unless_allowed(project, personas, alert, receiver):
    server = receiver()
    alert_services.alert_webhook_set(project=project, url=server.url, actor=personas["manager"])
    assert alert_services.alert_deliver(alert_id=alert.pk) is False
    alert.refresh_from_db()
    assert "non-public address (127.0.0.1)" in alert.delivery_error
    assert server.received == []


def test_the_delivery_task_retries_with_backoff_then_gives_up_quietly(
    project, personas, alert, allow_local
):
    alert_services.alert_webhook_set(
        project=project, url=closed_port_url(), actor=personas["manager"]
    )
    alert_deliver_task.apply(args=[alert.pk])  # retries run at once when applied locally
    alert.refresh_from_db()
    assert alert.delivery_attempts == DELIVERY_RETRIES + 1
    assert alert.delivered_at is None and "Could not reach" in alert.delivery_error


def test_the_beat_task_and_the_delivery_run_on_the_real_worker(
    transactional_db, celery_worker, project, personas, times, receiver, allow_local
):
    server = receiver()
    webhook = alert_services.alert_webhook_set(
        project=project, url=server.url, actor=personas["manager"]
    )
    small_drift(project, personas["expert"], times)
    started = time.monotonic()
    drift_check_task.delay()  # what beat sends
    while not server.received and time.monotonic() - started < 20:
        time.sleep(0.1)
    ((headers, body),) = server.received
    assert verify(webhook.secret, headers, body)
    alert = DriftAlert.objects.get()
    deadline = time.monotonic() + 5
    while alert.delivered_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
        alert.refresh_from_db()
    assert alert.delivered_at is not None
    assert json.loads(body)["alert"]["id"] == alert.pk


# ---- Webhook settings -----------------------------------------------------------------------


def test_a_webhook_gets_a_generated_secret_kept_across_url_changes(db, project, personas):
    manager = personas["manager"]
    first = alert_services.alert_webhook_set(
        project=project, url="https://a.example.com/h", actor=manager
    )
    assert len(first.secret) == 64 and int(first.secret, 16) >= 0
    second = alert_services.alert_webhook_set(
        project=project, url="https://b.example.com/h", actor=manager
    )
    assert second.secret == first.secret and second.url == "https://b.example.com/h"
    rotated = alert_services.alert_webhook_rotate_secret(project=project, actor=manager)
    assert rotated.secret != first.secret
    assert alert_services.alert_webhook_clear(project=project, actor=manager) is True
    assert not AlertWebhook.objects.exists()
    assert alert_services.alert_webhook_clear(project=project, actor=manager) is False
    assert alert_services.alert_webhook_rotate_secret(project=project, actor=manager) is None


@pytest.mark.parametrize(
    "url", ["", "ftp://example.com/x", "javascript:alert(1)", "not a url", "https://x/" + "a" * 500]
)
def test_a_webhook_url_must_be_http_or_https(db, project, personas, url):
    with pytest.raises(ValidationError) as caught:
        alert_services.alert_webhook_set(project=project, url=url, actor=personas["manager"])
    assert "url" in caught.value.message_dict
    assert not AlertWebhook.objects.exists()


def test_drift_check_project_returns_only_what_it_created(db, project, personas, times, now):
    small_drift(project, personas["expert"], times)
    assert len(drift_check_project(project=project, as_of=now)) == 1
    assert drift_check_project(project=project, as_of=now) == []
