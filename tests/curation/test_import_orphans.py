"""Imports whose worker died mid-run are failed by the sweep, never left looking busy."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from curation.models import ImportJob, ImportStatus, Item
from curation.services import imports as services

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _storage(settings, tmp_path):
    settings.STORAGE_DIR = tmp_path / "storage"


def _running_job(project, user, *, started_ago: timedelta) -> ImportJob:
    """A job as a worker leaves it when killed mid-run: running state, file still there."""
    job = services.import_job_create(
        project=project,
        created_by=user,
        filename="upload.jsonl",
        chunks=iter([json.dumps({"external_id": "x", "prompt": "Q?", "output": "A."}).encode()]),
    )
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportStatus.VALIDATING, started_at=timezone.now() - started_ago
    )
    job.refresh_from_db()
    return job


def _other_session():
    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    )


def _wait_for_lock_release(job_id: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with _other_session() as probe:
        while time.monotonic() < deadline:
            (held,) = probe.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = %s AND objid = %s",
                [services.IMPORT_LOCK_CLASS, job_id],
            ).fetchone()
            if not held:
                return
            time.sleep(0.05)
    raise AssertionError("the closed session's advisory lock was never released")


def test_a_job_whose_worker_is_gone_is_failed_and_its_file_removed(personas, project, settings):
    job = _running_job(project, personas["manager"], started_ago=timedelta(minutes=5))
    stored = settings.STORAGE_DIR / job.path
    assert stored.exists()
    assert services.import_jobs_fail_orphaned() == 1
    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED and job.finished_at is not None
    assert "stopped before it finished" in job.message and "nothing was imported" in job.message
    assert not stored.exists()
    assert not Item.objects.exists()
    assert services.import_jobs_fail_orphaned() == 0  # once


def test_a_job_whose_worker_holds_its_lock_is_left_alone(personas, project):
    job = _running_job(project, personas["manager"], started_ago=timedelta(minutes=30))
    with _other_session() as worker:  # a live worker's session holds the job's lock
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [services.IMPORT_LOCK_CLASS, job.pk])
        assert services.import_jobs_fail_orphaned() == 0
        job.refresh_from_db()
        assert job.status == ImportStatus.VALIDATING
    # the worker's session ended (as when the process is killed): once the server has ended
    # that backend (asynchronously, just after the disconnect), the lock is free
    _wait_for_lock_release(job.pk)
    assert services.import_jobs_fail_orphaned() == 1


def test_a_job_that_just_started_gets_a_grace_period(personas, project):
    job = _running_job(project, personas["manager"], started_ago=timedelta(seconds=5))
    assert services.import_jobs_fail_orphaned() == 0
    job.refresh_from_db()
    assert job.status == ImportStatus.VALIDATING


def test_a_finished_run_leaves_no_lock_behind(personas, project, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"external_id": "y", "prompt": "Q?", "output": "A."}) + "\n")
    job = services.import_job_create(
        project=project, created_by=personas["manager"], filename=path.name, path=path
    )
    assert services.import_job_run(job_id=job.pk).status == ImportStatus.SUCCEEDED
    with _other_session() as other:
        row = other.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", [services.IMPORT_LOCK_CLASS, job.pk]
        ).fetchone()
    assert row == (True,)
