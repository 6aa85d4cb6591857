# ruff: noqa: F811 (fixtures imported from test_runs are used as arguments)
"""Training runs on real infrastructure: a training worker started as its own process
(`celery -A redline worker -Q training -c 1 --max-tasks-per-child=1`, as in production)
consumes the `training` queue through the real Redis broker and trains runs launched through
the API; a second delivery of the same message trains nothing; a worker killed with SIGKILL
leaves a run that the stale-heartbeat sweep fails, never one stuck RUNNING."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.training.test_runs import sft_version, tiny, tiny_prepared  # noqa: F401 (fixtures)
from training.models import Adapter, RunStatus, TrainingRun
from training.services.runs import runs_fail_stale
from training.tasks import train_run_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class TrainingWorker:
    """A `celery worker -Q training` subprocess with this test's database and storage."""

    def __init__(self, env: dict[str, str], log: Path):
        self.log = log
        self.name = f"training-test-{uuid.uuid4().hex[:8]}@%h"
        command = [
            sys.executable, "-m", "celery", "-A", "redline", "worker", "-Q", "training",
            "-c", "1", "--max-tasks-per-child=1", "-P", "prefork", "--loglevel=INFO",
            "-n", self.name, "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self._out = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited ({self.proc.returncode}):\n{self.text()}")
            if " ready." in self.text():
                return
            time.sleep(0.2)
        raise AssertionError(f"the worker did not start in {timeout} s:\n{self.text()}")

    def children(self) -> list[int]:
        """The pool's child processes (the one that trains), from /proc."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []

    def kill9(self) -> list[int]:
        """SIGKILL the pool children and the worker itself, as an OOM killer would."""
        children = self.children()
        _kill9(*children, self.proc.pid)
        self.proc.wait(timeout=10)
        for pid in children:
            _wait_gone(pid)
        return children

    def stop(self) -> None:
        if self.proc.poll() is None:
            children = self.children()
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: the child ends with its task
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill9(*children, self.proc.pid)
                self.proc.wait(timeout=10)
        self._out.close()


def _kill9(*pids: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # a zombie (killed, not yet reaped by init) counts as gone
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} survived SIGKILL")


@pytest.fixture
def training_worker(transactional_db, settings, tmp_path):
    """Start a training worker process on this test's database, broker and storage."""
    from redline.celery import app

    assert settings.CELERY_BROKER_URL.startswith("redis://"), "tests run on Redis"
    app.control.purge()
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "REDLINE_STORAGE_DIR": str(settings.STORAGE_DIR),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    workers: list[TrainingWorker] = []

    def start() -> TrainingWorker:
        worker = TrainingWorker(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    app.control.purge()


def wait_for(predicate, timeout: float, what: str, worker: TrainingWorker):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.text()[-4000:]}")


def launch(api, version, **config):
    response = api.post(
        "/api/v1/training-runs/",
        {"dataset": version.pk, "base_model": "tiny", "method": "sft", "config": config},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def finished(run_id: int):
    run = TrainingRun.objects.get(pk=run_id)
    return run if run.finished else None


def test_a_run_launched_through_the_api_is_trained_by_a_training_worker_process(
    tiny, sft_version, personas, api_for, training_worker, settings
):
    worker = training_worker()

    run_id = launch(api_for(personas["admin"]), sft_version, max_steps=4)

    run = wait_for(lambda: finished(run_id), 180, "the run to finish", worker)
    assert run.status == RunStatus.SUCCEEDED, f"{run.error}\n{run.log}"
    assert run.step == run.total_steps == 4 and run.task_id
    adapter = Adapter.objects.get(run=run)
    assert (Path(settings.STORAGE_DIR) / adapter.path / "adapter_model.safetensors").is_file()
    assert adapter.manifest["lineage"]["decisions"] == 6
    # the worker process (not this one) ran it
    assert f"Task training.train_run[{run.task_id}] received" in worker.text()


def test_a_twice_delivered_message_trains_once(
    tiny, sft_version, personas, api_for, training_worker
):
    worker = training_worker()
    run_id = launch(api_for(personas["admin"]), sft_version, max_steps=3)
    second = train_run_task.delay(run_id)  # the broker delivers the same run again

    run = wait_for(lambda: finished(run_id), 180, "the run to finish", worker)
    first_id = TrainingRun.objects.get(pk=run_id).task_id
    assert first_id and first_id != second.id
    # both messages are consumed, by two fresh children (--max-tasks-per-child=1)
    for task_id in (first_id, second.id):
        wait_for(
            lambda task_id=task_id: re.search(
                rf"Task training\.train_run\[{task_id}\] succeeded", worker.text()
            ),
            120,
            f"task {task_id} to be consumed",
            worker,
        )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.log.count("phase: training") == 1 and run.log.count(f"run {run_id}:") == 1
    assert Adapter.objects.filter(run_id=run_id).count() == 1
    assert TrainingRun.objects.count() == 1


def test_a_run_whose_worker_is_killed_ends_failed_through_the_heartbeat_sweep(
    tiny, sft_version, personas, api_for, training_worker, settings
):
    worker = training_worker()
    run_id = launch(api_for(personas["admin"]), sft_version, max_steps=100_000)

    def training():
        run = TrainingRun.objects.get(pk=run_id)
        assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING), f"{run.error}\n{run.log}"
        return run.status == RunStatus.RUNNING and run.step > 0 and run.heartbeat_at

    wait_for(training, 180, "the run to be training", worker)
    # alive: its heartbeat is fresh, the sweep leaves it alone
    assert runs_fail_stale(older_than=timedelta(seconds=30)) == 0
    children = worker.kill9()
    assert children, "the task ran in a pool child"

    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == RunStatus.RUNNING and run.step < 100_000  # the dead cannot finish
    time.sleep(1.5)
    assert TrainingRun.objects.get(pk=run_id).heartbeat_at == run.heartbeat_at  # no beats
    threshold = timedelta(seconds=3)
    wait_for(
        lambda: timezone.now() - run.heartbeat_at > threshold, 10, "the heartbeat to age", worker
    )

    assert runs_fail_stale(older_than=threshold) == 1

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.finished_at
    assert run.error.startswith("No heartbeat for 3 seconds: the worker running this run stopped")
    assert "No heartbeat for 3 seconds" in run.log
    assert not Adapter.objects.filter(run_id=run_id).exists()
    adapters = Path(settings.STORAGE_DIR) / "adapters"
    assert not list(adapters.glob(f".{run_id}.tmp-*")) and not (adapters / str(run_id)).exists()
    assert runs_fail_stale(older_than=threshold) == 0  # once
    assert not TrainingRun.objects.filter(status=RunStatus.RUNNING).exists()
