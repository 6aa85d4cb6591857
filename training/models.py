"""Training data and what is trained on it.

A ``DatasetVersion`` is one immutable build of a project's final decisions into trl's dataset
shapes (``training.services.datasets``). Its row is created queued by a request, built once
on the ``datasets`` queue, and from then on never changes: the files live under
``STORAGE_DIR / storage_path`` and ``content_sha256`` identifies what is in them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from curation.models import Project


class DatasetKind(models.TextChoices):
    SFT = "sft", "SFT (supervised fine-tuning)"
    PREFERENCE = "preference", "Preference pairs (DPO)"
    KTO = "kto", "Unpaired preference (KTO)"


class DatasetStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Building"
    SUCCEEDED = "succeeded", "Built"
    FAILED = "failed", "Failed"


class DatasetFormat(models.TextChoices):
    STANDARD = "standard", "Standard (strings)"
    CONVERSATIONAL = "conversational", "Conversational (messages)"


class DatasetVersion(models.Model):
    """One build request and, once built, its immutable files.

    ``fingerprint`` identifies the request: the project, the normalised parameters (kinds,
    filters, eval fraction, seed, options) and the state of the project's decisions when it
    was asked for. A second identical request finds this row instead of making another (the
    unique constraint settles races); a failed build does not block a retry.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_versions")
    status = models.CharField(
        max_length=16, choices=DatasetStatus.choices, default=DatasetStatus.QUEUED
    )
    kinds = models.JSONField()  # ["sft", "preference", "kto"], canonical order
    params = models.JSONField()  # the normalised request: see services.datasets.params_clean
    eval_fraction = models.FloatField()
    seed = models.BigIntegerField()
    fingerprint = models.CharField(max_length=64)
    # Filled in by the build.
    format = models.CharField(max_length=16, choices=DatasetFormat.choices, blank=True)
    items_total = models.PositiveIntegerField(default=0)  # decisions selected
    items_done = models.PositiveIntegerField(default=0)  # progress
    phase = models.CharField(max_length=64, blank=True)  # what the build is doing now
    row_counts = models.JSONField(default=dict, blank=True)  # {kind: {"train": n, "eval": n}}
    rows_total = models.PositiveBigIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    content_sha256 = models.CharField(max_length=64, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    storage_path = models.CharField(max_length=255, blank=True)  # relative to STORAGE_DIR
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_via = models.CharField(max_length=8, default="web")  # web | api | cli
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "fingerprint"],
                condition=~models.Q(status="failed"),
                name="datasetversion_unique_request",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=DatasetStatus.values),
                name="datasetversion_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(eval_fraction__gte=0, eval_fraction__lt=1),
                name="datasetversion_eval_fraction_range",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="datasetversion_recent"),
        ]

    def __str__(self) -> str:
        return f"dataset {self.pk} of {self.project_id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (DatasetStatus.SUCCEEDED, DatasetStatus.FAILED)

    @property
    def short_sha(self) -> str:
        return self.content_sha256[:12]

    @property
    def settings_text(self) -> str:
        """The request in one line, for lists: kinds, split, filters, options."""
        params = self.params or {}
        filters = params.get("filters", {})
        options = params.get("options", {})
        parts = [
            f"eval {params.get('eval_fraction', 0):g}, seed {params.get('seed', 0)}",
            " + ".join(filters.get("outcomes", [])),
        ]
        if filters.get("sources"):
            parts.append("by " + "/".join(filters["sources"]))
        if filters.get("min_agreement") is not None:
            parts.append(f"agreement ≥ {filters['min_agreement']:g}")
        if filters.get("date_from") or filters.get("date_to"):
            parts.append(f"{filters.get('date_from') or '…'} to {filters.get('date_to') or '…'}")
        if filters.get("models"):
            parts.append("models " + ", ".join(filters["models"]))
        for key, answer in (filters.get("labels") or {}).items():
            parts.append(f"{key} = {answer}")
        if filters.get("gold", "include") != "include":
            parts.append(f"gold {filters['gold']}")
        if not options.get("dedup", True):
            parts.append("duplicates kept")
        if options.get("min_edit_chars", 1) != 1:
            parts.append(f"min edit {options['min_edit_chars']}")
        if options.get("system_prompt"):
            parts.append("system prompt")
        return " · ".join(p for p in parts if p)

    @property
    def kind_rows(self) -> list[dict]:
        """Rows per kind, in the canonical kind order: ``[{kind, train, eval, dropped}]``."""
        dropped = self.manifest.get("duplicates_dropped", {})
        return [
            {
                "kind": kind,
                "train": self.row_counts[kind].get("train", 0),
                "eval": self.row_counts[kind].get("eval", 0),
                "dropped": dropped.get(kind, 0),
            }
            for kind in DatasetKind.values
            if kind in self.row_counts
        ]

    @property
    def files(self) -> list[dict]:
        """The data files as the manifest lists them (empty until built)."""
        return list(self.manifest.get("files", []))


# --------------------------------------------------------------------------------------------
# Base models, training runs and adapters (training.services.runs).


class BaseModel(models.Model):
    """A model adapters are trained on: a hub id or a local folder written by
    ``save_pretrained``. Built-in ones (``tiny``, ``smollm2``) live under
    ``STORAGE_DIR/models/<folder>/`` and are resolved there at run time, so a moved storage
    dir keeps working."""

    name = models.CharField(max_length=100, unique=True)
    reference = models.CharField(max_length=500)  # hub id (owner/name) or absolute local path
    revision = models.CharField(max_length=100, blank=True)
    parameters = models.BigIntegerField(null=True, blank=True)  # for defaults_for; None: unknown
    notes = models.TextField(blank=True)
    builtin = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def resolved_reference(self) -> str:
        """What ``load_base`` gets: a built-in model's folder under STORAGE_DIR, else the
        reference as registered."""
        if self.builtin:
            from pathlib import Path

            from training.ml.models import BUILT_IN_FOLDERS

            folder = BUILT_IN_FOLDERS.get(self.name)
            if folder:
                return str(Path(settings.STORAGE_DIR) / "models" / folder)
        return self.reference


class TrainingMethod(models.TextChoices):
    SFT = "sft", "SFT (supervised fine-tuning)"
    DPO = "dpo", "DPO (preference pairs)"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class TrainingRun(models.Model):
    """One LoRA training run: a dataset version, a base model, a method and resolved
    settings. QUEUED → RUNNING by compare-and-set (``run_execute``); a heartbeat while it
    runs; a beat sweep fails runs whose heartbeat went stale."""

    FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)

    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="training_runs"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="runs")
    method = models.CharField(max_length=8, choices=TrainingMethod.choices)
    config = models.JSONField()  # resolved TrainSettings.to_dict() (with lora)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    phase = models.CharField(max_length=32, blank=True)  # loading | preparing | training | saving
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(null=True, blank=True)
    loss = models.FloatField(null=True, blank=True)
    eval_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    metrics_history = models.JSONField(default=list, blank=True)  # step and eval events
    log = models.TextField(blank=True)  # the tail of the run's log
    error = models.TextField(blank=True)  # one line; the traceback is in the log
    cancel_requested = models.BooleanField(default=False)
    task_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_via = models.CharField(max_length=8, default="web")  # web | api | cli | admin
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=RunStatus.values), name="trainingrun_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(method__in=TrainingMethod.values),
                name="trainingrun_method_valid",
            ),
        ]
        indexes = [
            models.Index(
                fields=["heartbeat_at"],
                condition=models.Q(status="running"),
                name="trainingrun_running_heartbeat",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.method}, {self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_percent(self) -> int:
        if self.status == RunStatus.SUCCEEDED:
            return 100
        if not self.total_steps:
            return 0
        return min(100, round(100 * self.step / self.total_steps))


class Adapter(models.Model):
    """The LoRA adapter a successful run published under ``STORAGE_DIR / path``."""

    run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, related_name="adapter")
    path = models.CharField(max_length=255)  # relative to STORAGE_DIR: adapters/<run id>
    manifest = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"adapter of run {self.run_id}"
