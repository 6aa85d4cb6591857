"""Fixtures for the generation tests: the tiny model registered as a built-in base model, a
dataset version with an eval split, and an adapter of that project.

The adapter's weights come from the ML tests' session SFT run (``sft_run``: 30 steps on the
QA pairs), copied under this test's STORAGE_DIR as the published adapter of a run created
through ``training_run_create``: training again for every test would cost seconds each, and
the SFT path itself is covered by tests/training/test_runs.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.training.ml.conftest import QA, data_dir, sft_run, tiny_dir  # noqa: F401 (fixtures)
from training.models import Adapter, RunStatus, TrainingRun
from training.services.runs import base_models_register_builtin, training_run_create

__all__ = ["QA", "adapter", "data_dir", "eval_version", "sft_run", "tiny", "tiny_dir"]


@pytest.fixture
def tiny(settings, tiny_dir):  # noqa: F811
    """The built-in tiny model in this test's STORAGE_DIR, registered as a BaseModel."""
    models = Path(settings.STORAGE_DIR) / "models"
    models.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_dir, models / "tiny")
    (model,) = base_models_register_builtin(names=["tiny"])
    return model


@pytest.fixture
def eval_version(project, personas, experts, decide_item, build):
    """A built SFT version of eight accepted answers to the QA questions, half held out."""
    for n in range(8):
        question, answer = QA[n % 4]
        decide_item(
            project,
            [(experts[0], "accept", {})],
            prompt=f"{question} (case {n})",
            candidates=[(answer, "m1")],
        )
    version = build(project, personas["admin"], kinds=["sft"], eval_fraction=0.5, seed=3)
    assert version.status == "succeeded", version.error
    assert version.row_counts["sft"]["eval"] > 0
    return version


@pytest.fixture
def adapter(tiny, eval_version, personas, sft_run, settings):  # noqa: F811
    """An adapter of ``eval_version``'s project on ``tiny`` (the session SFT run's weights)."""
    result, _ = sft_run
    run = training_run_create(
        user=personas["admin"],
        dataset_version=eval_version,
        base_model=tiny,
        method="sft",
        config={"max_steps": 30},
    )
    folder = Path(settings.STORAGE_DIR) / "adapters" / str(run.pk)
    shutil.copytree(result.out_dir, folder)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    return Adapter.objects.create(run=run, path=f"adapters/{run.pk}")
