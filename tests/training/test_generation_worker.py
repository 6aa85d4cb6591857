# ruff: noqa: F811 (fixtures imported from generation_fixtures are used as arguments)
"""Generation through real infrastructure: committed rows, the Redis broker, a real Celery
worker consuming the ``inference`` queue. Try it from the adapter page's panel, and a
candidates job asked for over the API."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.utils.html import escape

from tests.factories import item_add
from tests.training.generation_fixtures import (  # noqa: F401 (fixtures)
    QA,
    adapter,
    data_dir,
    eval_version,
    sft_run,
    tiny,
    tiny_dir,
)
from training.ml.generate import Generator
from training.models import GenerationJob, JobStatus

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]


@pytest.fixture
def worker(transactional_db, celery_worker):
    return celery_worker


def wait_for(job_id: int, timeout: float = 120) -> GenerationJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = GenerationJob.objects.get(pk=job_id)
        if job.finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.status}")


def test_try_it_round_trip_through_the_inference_queue(
    project, adapter, personas, client_for, worker, settings
):
    client = client_for(personas["manager"])
    base_url = f"/projects/{project.slug}/adapters/{adapter.pk}/try-it/"
    prompt = QA[0][0]
    started = client.post(base_url, {"prompt": prompt})
    assert started.status_code == 200
    poll = re.search(r'hx-get="([^"]+)"', started.content.decode()).group(1)
    job = GenerationJob.objects.get()
    assert poll == f"{base_url}{job.pk}/"

    deadline = time.monotonic() + 120
    while "every 1s" in (html := client.get(poll).content.decode()):
        assert time.monotonic() < deadline, "the Try it panel never finished"
        time.sleep(0.3)
    job = GenerationJob.objects.get(pk=job.pk)
    assert job.status == JobStatus.SUCCEEDED, job.log
    assert job.task_id  # enqueued after commit, picked up by the worker

    reference = Generator(adapter.run.base_model.resolved_reference())
    name = reference.load_adapter(Path(settings.STORAGE_DIR) / adapter.path, name="ref")
    greedy = {"temperature": 0, "max_new_tokens": 128}
    base_answer = reference.generate([prompt], **greedy)[0]
    adapter_answer = reference.generate([prompt], adapter=name, **greedy)[0]
    assert base_answer != adapter_answer
    assert f'data-answer="base">{escape(base_answer)}</pre>' in html
    assert f'data-answer="adapter">{escape(adapter_answer)}</pre>' in html


def test_a_candidates_job_asked_for_over_the_api_runs_on_the_worker_once(
    project, tiny, personas, api_for, worker
):
    items = [item_add(project, prompt=q) for q, _ in QA[:3]]
    response = api_for(personas["manager"]).post(
        f"/api/v1/projects/{project.slug}/generation-jobs/",
        {
            "targets": [{"base_model": "tiny"}],
            "source": "open_items",
            "decoding": {"max_new_tokens": 6, "temperature": 0, "batch_size": 2},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    job = wait_for(response.json()["id"])
    assert job.status == JobStatus.SUCCEEDED, job.log
    assert job.done == job.total == 3
    for item in items:
        assert list(item.candidates.values_list("position", "model")) == [
            (0, "base-model"),
            (1, "tiny"),
        ]
    # the broker delivers the message again: nothing runs a second time
    from training.tasks import generate_job_task

    finished_at = job.finished_at
    generate_job_task.delay(job.pk)
    time.sleep(1.0)
    assert GenerationJob.objects.get(pk=job.pk).finished_at == finished_at
    assert sum(item.candidates.count() for item in items) == 6
