"""Helpers for dataset tests: items decided through the real queue, review and outcome
services, and builds run the way a worker runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.services.queue import queue_claim_next
from curation.services.settings import project_settings_update
from tests.factories import UserFactory, item_add, membership_add


@pytest.fixture(autouse=True)
def _storage(settings, tmp_path):
    settings.STORAGE_DIR = tmp_path / "storage"


@pytest.fixture
def experts(project):
    """Three experts of ``project``."""
    users = [UserFactory(username=f"expert-{n}") for n in range(3)]
    for user in users:
        membership_add(project, user, "expert")
    return users


@pytest.fixture
def decide_item():
    """``decide_item(project, experts_and_decisions, **item)``: add one item (``item_add``
    arguments) and have each ``(expert, verdict, fields)`` decide it through the queue and
    ``review_submit``. ``fields`` may be a callable of the item's candidates (in position
    order) returning the fields, for decisions that name a candidate. Returns the item."""
    from feedback.services import review_submit

    def run(project, decisions, **item_fields):
        item = item_add(project, **item_fields)
        candidates = list(item.candidates.order_by("position"))
        for expert, verdict, fields in decisions:
            claim = queue_claim_next(project=project, expert=expert)
            assert claim is not None and claim.item.pk == item.pk, "items are decided in order"
            if callable(fields):
                fields = fields(candidates)
            review_submit(item=claim.item, expert=expert, verdict=verdict, **(fields or {}))
        item.refresh_from_db()
        return item

    return run


@pytest.fixture
def compare_mode(project):
    return project_settings_update(project=project, review_modes=["correct", "compare"])


@pytest.fixture
def build():
    """``build(project, user, **params)``: request a version and build it as the worker
    would (the task's function, called directly); returns the version as it ended."""
    from training.services import dataset_version_build, dataset_version_request

    def run(project, user, **params):
        version, created = dataset_version_request(project=project, user=user, params=params)
        if created:
            dataset_version_build(version_id=version.pk)
        version.refresh_from_db()
        return version

    return run


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def rows(version, name: str) -> list[dict]:
    """The rows of a built version's file ``name`` ([] when the file was not written)."""
    from training.selectors import version_dir

    path = version_dir(version) / name
    return read_jsonl(path) if path.exists() else []
