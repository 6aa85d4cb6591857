"""Label Studio jobs whose worker died, and connections to servers that do not answer.

On PostgreSQL, never a mock: a real worker process is started and killed with SIGKILL, and
other database sessions hold (or do not hold) the advisory locks the sweep looks at. The
unreachable servers are real sockets on 127.0.0.1: one that refuses, one that accepts and
never answers, one whose accept queue is full (its SYNs are dropped, so connecting times out).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse

from feedback.labelstudio import services
from feedback.models import LabelStudioJob, LabelStudioJobKind, LabelStudioJobStatus

ROOT = Path(__file__).resolve().parents[2]
PORT_REFUSED, PORT_STALLED, PORT_FULL = 18601, 18602, 18603
TOKEN = "secret-token-0123456789abcdef"

RUNNING, FAILED = LabelStudioJobStatus.RUNNING, LabelStudioJobStatus.FAILED


@pytest.fixture
def conn(project, personas):
    return services.connection_set(
        project=project,
        actor=personas["manager"],
        url=f"http://127.0.0.1:{PORT_REFUSED}",
        token=TOKEN,
    )


@pytest.fixture
def other_session():
    """``other_session()``: a separate PostgreSQL session on the test database (autocommit),
    closed at the end: a stand-in for another worker's connection."""
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks need PostgreSQL")
    opened = []

    def make():
        s = connection.settings_dict
        session = psycopg.connect(
            dbname=s["NAME"],
            user=s["USER"],
            password=s["PASSWORD"] or None,
            host=s["HOST"] or None,
            port=s["PORT"] or None,
            autocommit=True,
        )
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.close()


def _try_lock(session, lock_class: int, key: int) -> bool:
    return session.execute("SELECT pg_try_advisory_lock(%s, %s)", [lock_class, key]).fetchone()[0]


def _job(project, *, status=LabelStudioJobStatus.QUEUED, **fields) -> LabelStudioJob:
    """A job as ``job_submit`` makes it, without sending a Celery message (nothing here should
    run it but the worker the test starts itself)."""
    from django.utils import timezone

    job = LabelStudioJob.objects.create(
        project=project,
        kind=fields.pop("kind", LabelStudioJobKind.PUSH),
        created_at=timezone.now(),
        **fields,
    )
    if status == RUNNING:
        # Claimed as job_run claims it (compare-and-set) by a worker that then vanished.
        assert LabelStudioJob.objects.filter(pk=job.pk, status="queued").update(
            status=RUNNING, started_at=timezone.now()
        )
    return job


def _status(job) -> str:
    job.refresh_from_db()
    return job.status


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"Timed out after {timeout} s waiting for {what}")


# ---- The sweep --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the worker process must see the rows
def test_a_killed_worker_leaves_a_job_that_the_sweep_fails_and_the_page_explains(
    conn, project, personas, other_session, client_for
):
    job = _job(project, total=40, done=12)
    # Another job of the project "runs": the test holds the project lock, so the worker
    # claims the job, takes its job lock, and waits behind it (alive, doing nothing).
    holder = other_session()
    assert _try_lock(holder, services.JOB_LOCK_CLASS, project.pk)
    s = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
        "DJANGO_SETTINGS_MODULE": "redline.settings",
    }
    code = (
        "import django; django.setup(); "
        "from feedback.labelstudio.services import job_run; "
        f"job_run(job_id={job.pk})"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)  # noqa: S603
    try:
        _wait(lambda: _status(job) == RUNNING, 60, "the worker to claim the job")
        _wait(
            lambda: _status(job) == RUNNING and job.message == services._WAITING,
            10,
            "the worker to wait for the project",
        )
        # Alive and holding its job: the sweep leaves it alone, however often it runs.
        assert services.job_sweep_orphaned() == 0
        assert services.job_sweep_orphaned() == 0
        assert _status(job) == RUNNING
        assert not _try_lock(other_session(), services.JOB_RUN_LOCK_CLASS, job.pk)

        worker.kill()  # SIGKILL: no finally, no unlock, no last update
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert _status(job) == RUNNING  # nothing else would ever change it
    # PostgreSQL ends the dead worker's session (and frees its lock) within moments.
    _wait(lambda: services.job_sweep_orphaned(), 15, "the sweep to fail the orphaned job")
    job.refresh_from_db()
    assert job.status == FAILED and job.finished_at is not None and job.seconds >= 0
    assert "stopped after 12 of 40 tasks before it finished" in job.message
    assert "push again" in job.message
    assert services.job_sweep_orphaned() == 0  # done once
    # The sweep let go of the lock it took to fail the job.
    assert _try_lock(other_session(), services.JOB_RUN_LOCK_CLASS, job.pk)

    manager = client_for(personas["manager"])
    page = manager.get(reverse("feedback:labelstudio", args=[project.slug]))
    html = page.content.decode()
    assert page.status_code == 200
    assert f'data-job="{job.pk}" data-status="failed"' in html
    assert "stopped after 12 of 40 tasks before it finished" in html
    progress = manager.get(
        reverse("feedback:labelstudio_job_progress", args=[project.slug, job.pk])
    ).content.decode()
    assert "stopped after 12 of 40 tasks" in progress and "hx-trigger" not in progress
    api = manager.get(f"/api/v1/projects/{project.slug}/label-studio/jobs/{job.pk}/").json()
    assert api["status"] == "failed" and "stopped after 12 of 40" in api["message"]


@pytest.mark.django_db(transaction=True)
def test_only_running_jobs_that_no_session_holds_are_failed(conn, project, other_session):
    orphan = _job(project, status=RUNNING, kind=LabelStudioJobKind.PULL)
    alive = _job(project, status=RUNNING)
    queued = _job(project)
    done = _job(project, status=RUNNING)
    LabelStudioJob.objects.filter(pk=done.pk).update(status=LabelStudioJobStatus.SUCCEEDED)
    live_worker = other_session()
    assert _try_lock(live_worker, services.JOB_RUN_LOCK_CLASS, alive.pk)

    assert services.job_sweep_orphaned() == 1
    assert _status(orphan) == FAILED and "pull again" in orphan.message
    assert _status(alive) == RUNNING
    assert _status(queued) == "queued" and _status(done) == "succeeded"

    # The live worker's session ends (its connection is closed): now it is an orphan too.
    live_worker.close()
    _wait(lambda: services.job_sweep_orphaned(), 15, "the sweep to fail the second job")
    assert _status(alive) == FAILED


@pytest.mark.django_db(transaction=True)
def test_a_file_import_orphan_loses_its_upload(project, personas, other_session):
    folder = services.uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    upload = folder / "upload-orphan-test.json"
    upload.write_text("[]")
    scope = {"path": str(upload.relative_to(settings.STORAGE_DIR)), "filename": "export.json"}
    job = _job(project, status=RUNNING, kind=LabelStudioJobKind.FILE_IMPORT, scope=scope)
    assert services.job_sweep_orphaned() == 1
    assert _status(job) == FAILED and "upload the file again" in job.message
    assert not upload.exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_held_by_a_live_worker_is_not_run_again_and_a_finished_one_lets_go(
    conn, project, other_session
):
    job = _job(project)
    live_worker = other_session()
    assert _try_lock(live_worker, services.JOB_RUN_LOCK_CLASS, job.pk)
    assert services.job_run(job_id=job.pk) is None  # a redelivered message
    assert _status(job) == "queued"
    live_worker.execute("SELECT pg_advisory_unlock(%s, %s)", [services.JOB_RUN_LOCK_CLASS, job.pk])

    # Runs now; the server refuses connections, so the push fails with a clear message.
    ran = services.job_run(job_id=job.pk)
    assert ran is not None and ran.status == FAILED
    assert "cannot reach Label Studio (ConnectError)" in ran.message
    assert services.job_run(job_id=job.pk) is None
    # Neither lock outlives the job.
    assert _try_lock(live_worker, services.JOB_RUN_LOCK_CLASS, job.pk)
    assert _try_lock(live_worker, services.JOB_LOCK_CLASS, project.pk)


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_runs_the_sweep_on_a_real_worker(project, celery_worker):
    from redline.celery import app

    assert {"task": "feedback.labelstudio_sweep_orphaned", "schedule": 300.0}.items() <= (
        settings.CELERY_BEAT_SCHEDULE["labelstudio-sweep-orphaned"].items()
    )
    for name in ("feedback.labelstudio_job_run", "feedback.labelstudio_sweep_orphaned"):
        assert app.amqp.router.route({}, name)["queue"].name == "datasets"
    orphan = _job(project, status=RUNNING)

    from feedback.labelstudio.tasks import labelstudio_sweep_orphaned_task

    labelstudio_sweep_orphaned_task.delay()
    _wait(lambda: _status(orphan) == FAILED, 30, "the worker's sweep")


# ---- Unreachable servers: quick, clear answers ------------------------------------------


@pytest.fixture
def stalled_server():
    """Accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", PORT_STALLED))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{PORT_STALLED}"
    stop.set()
    thread.join()
    for s in [*held, server]:
        s.close()


@pytest.fixture
def full_server():
    """Listens but never accepts, with its accept queue filled: Linux drops further SYNs, as
    a firewall that drops packets (or an address nobody answers on) does."""
    server = socket.socket()
    server.bind(("127.0.0.1", PORT_FULL))
    server.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", PORT_FULL))
        fillers.append(c)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{PORT_FULL}"
    for s in [*fillers, server]:
        s.close()


def _set_url(conn, url):
    conn.url = url
    conn.save(update_fields=["url"])


def test_the_test_timeouts_stay_short():
    # A web request waits at most this long per call to Label Studio.
    assert services.CONNECT_TIMEOUT_S <= 5 and services.TEST_TIMEOUT_S <= 10


@pytest.mark.django_db
def test_a_refused_connection_is_reported_at_once_without_retries(conn, project, personas, api_for):
    api = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/label-studio/test/"
    api.post(url)  # the SDK's (lazy) imports, once per process, are not what is timed
    started = time.monotonic()
    body = api.post(url)
    elapsed = time.monotonic() - started
    assert body.status_code == 200 and body.json()["ok"] is False
    assert "cannot reach Label Studio (ConnectError)" in body.json()["message"]
    assert elapsed < 2.5, elapsed  # the SDK's retries (1 s + 2 s backoff, ±10 %) are off here


@pytest.mark.django_db
def test_a_server_that_never_answers_is_reported_after_the_read_timeout(
    conn, project, personas, api_for, client_for, stalled_server, monkeypatch
):
    monkeypatch.setattr(services, "TEST_TIMEOUT_S", 1)
    _set_url(conn, stalled_server)
    started = time.monotonic()
    body = api_for(personas["manager"]).post(f"/api/v1/projects/{project.slug}/label-studio/test/")
    assert time.monotonic() - started < 4
    assert body.json()["ok"] is False
    assert "it did not answer in time (ReadTimeout)" in body.json()["message"]

    started = time.monotonic()
    page = client_for(personas["manager"]).post(
        reverse("feedback:labelstudio_test", args=[project.slug])
    )
    assert time.monotonic() - started < 4
    html = page.content.decode()
    assert page.status_code == 200 and 'data-ok="false"' in html
    assert "Checking the token: cannot reach Label Studio: it did not answer in time" in html


@pytest.mark.django_db
def test_a_server_that_drops_connections_is_reported_after_the_connect_timeout(
    conn, project, personas, client_for, full_server, monkeypatch
):
    monkeypatch.setattr(services, "CONNECT_TIMEOUT_S", 1)
    _set_url(conn, full_server)
    started = time.monotonic()
    page = client_for(personas["manager"]).post(
        reverse("feedback:labelstudio_test", args=[project.slug])
    )
    assert time.monotonic() - started < 4
    html = page.content.decode()
    assert 'data-ok="false"' in html
    assert "did not accept a connection within 1 s (ConnectTimeout)" in html
