"""Helpers for the loop's tests (evaluation rounds, promotion, policies).

Where a test is about the round's own logic (blind items, tallies, the pass rule) the
generation job's answers are written as rows here, exactly as the job's executor leaves
them; the full loop (test_loop_e2e.py) goes through the real generation job and worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from training.models import (
    Adapter,
    BaseModel,
    DatasetStatus,
    DatasetVersion,
    EvaluationRound,
    GenerationJob,
    GenerationOutput,
    GenerationPurpose,
    GenerationSource,
    GenerationTarget,
    JobStatus,
    RunStatus,
    TrainingRun,
)

# Names that must never reach an expert: unusual enough that finding one in a page is a leak.
BASE_NAME = "zebrafish-base-7q"


def base_model(name: str = BASE_NAME) -> BaseModel:
    model, _ = BaseModel.objects.get_or_create(
        name=name, defaults={"reference": "/nonexistent/" + name}
    )
    return model


def built_version(project, *, eval_rows: int = 4, **params) -> DatasetVersion:
    """A built dataset version row (no files: for tests that only read its row)."""
    n = DatasetVersion.objects.filter(project=project).count()
    return DatasetVersion.objects.create(
        project=project,
        status=DatasetStatus.SUCCEEDED,
        kinds=["sft"],
        params={
            "kinds": ["sft"],
            "eval_fraction": 0.2,
            "seed": 0,
            "filters": {"outcomes": ["accepted"], **params},
            "options": {},
        },
        eval_fraction=0.2,
        seed=0,
        fingerprint=f"fp-{project.pk}-{n}-{timezone.now().timestamp()}",
        row_counts={"sft": {"train": 8, "eval": eval_rows}},
        created_at=timezone.now(),
    )


def fake_adapter(project, *, model: BaseModel | None = None, version=None, files=True) -> Adapter:
    """An adapter row of a succeeded run (no training), with small files on disk."""
    model = model or base_model()
    version = version or built_version(project)
    run = TrainingRun.objects.create(
        dataset_version=version,
        base_model=model,
        method="sft",
        config={"method": "sft"},
        status=RunStatus.SUCCEEDED,
        eval_loss=1.25,
    )
    adapter = Adapter.objects.create(run=run, path=f"adapters/{run.pk}")
    if files:
        folder = Path(settings.STORAGE_DIR) / adapter.path
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(64))
    return adapter


def round_with_answers(
    subject: Adapter,
    answers: list[tuple[str, str, str]],
    *,
    baseline: Adapter | None = None,
    pass_rule: dict | None = None,
    messages: bool = False,
) -> EvaluationRound:
    """A round whose generation job succeeded with ``answers`` (``[(prompt, subject answer,
    baseline answer)]``), as the executor leaves it before calling
    ``evaluation_round_generated``."""
    from training.services.evaluation import pass_rule_clean

    project = subject.run.dataset_version.project
    base = baseline.run.base_model if baseline else subject.run.base_model
    job = GenerationJob.objects.create(
        project=project,
        purpose=GenerationPurpose.EVALUATION,
        source=GenerationSource.EVAL_SPLIT,
        dataset_version=subject.run.dataset_version,
        status=JobStatus.SUCCEEDED,
        total=2 * len(answers),
        done=2 * len(answers),
    )
    subject_target = GenerationTarget.objects.create(
        job=job,
        position=0,
        base_model=subject.run.base_model,
        adapter=subject,
        tag=f"{subject.run.base_model.name}+adapter-{subject.pk}",
    )
    baseline_target = GenerationTarget.objects.create(
        job=job,
        position=1,
        base_model=base,
        adapter=baseline,
        tag=base.name if baseline is None else f"{base.name}+adapter-{baseline.pk}",
    )
    rows = []
    for index, (prompt, subject_answer, baseline_answer) in enumerate(answers):
        chat = [{"role": "user", "content": prompt}] if messages else None
        for target, text in ((subject_target, subject_answer), (baseline_target, baseline_answer)):
            rows.append(
                GenerationOutput(
                    job=job,
                    target=target,
                    index=index,
                    prompt="" if chat else prompt,
                    messages=chat,
                    output=text,
                )
            )
    GenerationOutput.objects.bulk_create(rows)
    return EvaluationRound.objects.create(
        project=project,
        subject=subject,
        baseline_adapter=baseline,
        baseline_base_model=base,
        dataset_version=subject.run.dataset_version,
        generation_job=job,
        pass_rule=pass_rule_clean(pass_rule),
    )


_TINY: dict[str, Path] = {}


def tiny_model(tmp_path_factory) -> BaseModel:
    """The built-in tiny model (prepared once per session) in this test's STORAGE_DIR."""
    from training.ml.models import prepare_tiny
    from training.services.runs import base_models_register_builtin

    if "dir" not in _TINY:
        _TINY["dir"] = prepare_tiny(tmp_path_factory.getbasetemp() / "loop-tiny")
    models = Path(settings.STORAGE_DIR) / "models"
    models.mkdir(parents=True, exist_ok=True)
    if not (models / "tiny").exists():
        os.symlink(_TINY["dir"], models / "tiny")
    (model,) = base_models_register_builtin(names=["tiny"])
    return model


def publish_fake_adapter(run: TrainingRun, *, eval_loss: float = 1.5) -> Adapter:
    """Mark a queued run succeeded with a small adapter on disk (no training)."""
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, eval_loss=eval_loss)
    adapter = Adapter.objects.create(run=run, path=f"adapters/{run.pk}")
    folder = Path(settings.STORAGE_DIR) / adapter.path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(64))
    return adapter
