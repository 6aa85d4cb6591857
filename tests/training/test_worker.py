"""End to end on real infrastructure: a build asked for over the API is run by a real Celery
worker (Redis broker, committed rows), once, with progress visible to other connections."""

from __future__ import annotations

import threading
import time

import pytest

from training.models import DatasetStatus, DatasetVersion
from training.services import dataset_version_build, dataset_version_request
from training.services import datasets as build_service
from training.tasks import dataset_build_task

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until_finished(version_id: int, timeout: float = 60) -> DatasetVersion:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = DatasetVersion.objects.get(pk=version_id)
        if version.finished:
            return version
        time.sleep(0.1)
    raise AssertionError(f"version {version_id} still {version.status}")


@pytest.fixture
def worker(transactional_db, celery_worker):
    return celery_worker


def test_a_build_asked_for_over_the_api_is_built_by_a_real_worker_once(
    project, personas, experts, decide_item, api_for, worker, settings
):
    for n in range(3):
        decide_item(
            project,
            [(experts[0], "correct", {"corrected_output": f"Fixed {n}."})],
            prompt=f"Q{n}?",
            candidates=[(f"A{n}", "m")],
        )
    response = api_for(personas["manager"]).post(
        f"/api/v1/projects/{project.slug}/datasets/", {"eval_fraction": 0}, format="json"
    )
    assert response.status_code == 201
    version = wait_until_finished(response.json()["id"])
    assert version.status == DatasetStatus.SUCCEEDED, version.error
    assert version.rows_total == 3 + 3 + 6 and version.attempts == 1
    assert version.items_total == version.items_done == 3
    finished_at = version.finished_at
    # the broker delivers the same message again: nothing is built a second time
    dataset_build_task.delay(version.pk)
    time.sleep(1.0)
    again = DatasetVersion.objects.get(pk=version.pk)
    assert (again.attempts, again.finished_at, again.status) == (1, finished_at, "succeeded")
    assert DatasetVersion.objects.count() == 1
    assert sorted(p.name for p in (settings.STORAGE_DIR / "datasets").iterdir()) == [
        str(version.pk)
    ]


def test_progress_is_visible_to_other_connections_while_the_build_runs(
    project, personas, experts, decide_item, monkeypatch
):
    monkeypatch.setattr(build_service, "PROGRESS_ROWS", 2)
    monkeypatch.setattr(build_service, "PROGRESS_EVERY_S", 0)
    for n in range(7):
        decide_item(project, [(experts[0], "accept", {})], prompt=f"Q{n}?", candidates=[("A", "m")])
    version, _ = dataset_version_request(
        project=project, user=personas["manager"], params={}, enqueue=False
    )
    seen: list[tuple[str, int, int]] = []
    real_decision = build_service._decision

    def watching(row):
        # Before each decision is mapped, another connection reads the version.
        def read():
            from django.db import connections

            try:
                seen.append(
                    DatasetVersion.objects.values_list("phase", "items_done", "items_total").get(
                        pk=version.pk
                    )
                )
            finally:
                connections.close_all()

        reader = threading.Thread(target=read)
        reader.start()
        reader.join()
        return real_decision(row)

    monkeypatch.setattr(build_service, "_decision", watching)
    built = dataset_version_build(version_id=version.pk)
    assert built.status == DatasetStatus.SUCCEEDED, built.error
    assert [phase for phase, _, _ in seen] == ["writing rows"] * 7
    assert [done for _, done, _ in seen] == [0, 0, 2, 2, 4, 4, 6]
    assert {total for _, _, total in seen} == {7}
