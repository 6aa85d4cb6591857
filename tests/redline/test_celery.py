"""A real task through the real Redis broker, executed by a real (in-process) Celery worker."""

import pytest

from redline.celery import app, ping


@pytest.fixture
def worker(celery_worker):
    return celery_worker


def test_ping_round_trips_through_redis_and_a_worker(worker):
    result = ping.delay("hello from the test")
    assert result.get(timeout=20) == "hello from the test"
    assert result.status == "SUCCESS"


def test_tasks_are_routed_to_their_queue():
    route = app.amqp.router.route({}, "curation.import_job_run")
    assert route["queue"].name == "datasets"
    assert app.amqp.router.route({}, "training.train_run")["queue"].name == "training"
    assert app.amqp.router.route({}, "training.generate_batch")["queue"].name == "inference"
    assert app.amqp.router.route({}, "redline.ping")["queue"].name == "default"


def test_celery_accepts_json_only_and_prefetches_one():
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.worker_prefetch_multiplier == 1


def test_beat_schedules_only_registered_tasks():
    app.loader.import_default_modules()
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks, entry["task"]
