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


# Closing the loop: generation jobs, blind evaluation rounds, promotion and retraining
# policies (training.services.generation, .evaluation, .promotion, .policies).


# A generation job goes through the same states as a training run.
JobStatus = RunStatus


class GenerationPurpose(models.TextChoices):
    CANDIDATES = "candidates", "Candidates for review"  # results land as item candidates
    TRY_IT = "try_it", "Try it"  # an adapter page's side-by-side answers
    EVALUATION = "evaluation", "Evaluation round"  # both answers for blind pairwise items


class GenerationSource(models.TextChoices):
    EVAL_SPLIT = "eval_split", "A dataset version's eval split"
    OPEN_ITEMS = "open_items", "The project's open items"
    FILE = "file", "An uploaded prompt file"
    PROMPTS = "prompts", "Prompts given with the request"


class GenerationJob(models.Model):
    """Generate answers for a set of prompts with one or more targets (a base model, or a base
    model plus an adapter), on the ``inference`` queue. Each base model is loaded once per job
    and its adapters attached to it; QUEUED → RUNNING by compare-and-set."""

    FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

    project = models.ForeignKey(
        "curation.Project", on_delete=models.CASCADE, related_name="generation_jobs"
    )
    purpose = models.CharField(
        max_length=16, choices=GenerationPurpose.choices, default=GenerationPurpose.CANDIDATES
    )
    source = models.CharField(max_length=16, choices=GenerationSource.choices)
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompts = models.JSONField(default=list, blank=True)  # source=prompts: strings or chats
    prompts_file = models.CharField(max_length=255, blank=True)  # source=file: under STORAGE_DIR
    limit = models.PositiveIntegerField(null=True, blank=True)  # at most this many prompts
    decoding = models.JSONField(default=dict, blank=True)  # resolved DecodingSettings
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    done = models.PositiveIntegerField(default=0)  # (prompt, target) answers written
    total = models.PositiveIntegerField(default=0)
    new_tokens = models.BigIntegerField(default=0)
    tokens_per_s = models.FloatField(null=True, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    task_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=JobStatus.values), name="generationjob_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"generation job {self.pk} ({self.purpose}, {self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_percent(self) -> int:
        if self.status == JobStatus.SUCCEEDED:
            return 100
        return min(100, round(100 * self.done / self.total)) if self.total else 0


class GenerationTarget(models.Model):
    """One model a job generates with: ``base_model`` alone, or with ``adapter`` attached.
    ``tag`` is what its answers are labelled with (``Candidate.model``), e.g.
    ``tiny+adapter-12``, so every candidate names the exact weights behind it."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="targets")
    position = models.PositiveSmallIntegerField()
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    adapter = models.ForeignKey(
        Adapter, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    tag = models.CharField(max_length=200)

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="generationtarget_unique")
        ]

    def __str__(self) -> str:
        return self.tag


class GenerationOutput(models.Model):
    """One answer: prompt number ``index`` of the job, by one target. ``item`` and
    ``candidate``: where it landed in the review queue, when it did."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="outputs")
    target = models.ForeignKey(GenerationTarget, on_delete=models.CASCADE, related_name="outputs")
    index = models.PositiveIntegerField()
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    output = models.TextField()
    new_tokens = models.PositiveIntegerField(default=0)
    item = models.ForeignKey(
        "curation.Item", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    candidate = models.ForeignKey(
        "curation.Candidate", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "index", "target"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "target", "index"], name="generationoutput_unique"
            )
        ]

    def __str__(self) -> str:
        return f"output {self.index} of job {self.job_id} by target {self.target_id}"


class RoundStatus(models.TextChoices):
    GENERATING = "generating", "Generating answers"
    JUDGING = "judging", "Experts judging"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class EvaluationRound(models.Model):
    """ "Evaluate adapter X (``subject``) against Y" on held-out prompts: both answers become
    blind pairwise items; experts' preferences give a win rate with a Wilson interval, and the
    pass rule frozen at creation decides ``passed``. Y is ``baseline_adapter`` when set, else
    ``baseline_base_model`` alone."""

    project = models.ForeignKey(
        "curation.Project", on_delete=models.CASCADE, related_name="evaluation_rounds"
    )
    subject = models.ForeignKey(Adapter, on_delete=models.PROTECT, related_name="evaluations")
    baseline_adapter = models.ForeignKey(
        Adapter, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    baseline_base_model = models.ForeignKey(
        BaseModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    dataset_version = models.ForeignKey(  # where the held-out prompts come from
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    generation_job = models.OneToOneField(
        GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="round"
    )
    pass_rule = models.JSONField(default=dict)  # frozen when the round is created
    status = models.CharField(
        max_length=16, choices=RoundStatus.choices, default=RoundStatus.GENERATING
    )
    wins = models.PositiveIntegerField(default=0)
    ties = models.PositiveIntegerField(default=0)
    losses = models.PositiveIntegerField(default=0)
    win_rate = models.FloatField(null=True, blank=True)
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(null=True, blank=True)  # None until decided
    figures = models.JSONField(default=dict, blank=True)  # eval loss, edit distances, ...
    error = models.TextField(blank=True)
    trigger = models.CharField(max_length=32, default="manual")  # manual | policy
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=RoundStatus.values), name="evalround_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(baseline_adapter__isnull=False)
                | models.Q(baseline_base_model__isnull=False),
                name="evalround_has_baseline",
            ),
        ]

    def __str__(self) -> str:
        return f"evaluation round {self.pk} of adapter {self.subject_id}"


class EvaluationItem(models.Model):
    """A blind pairwise item of a round. ``subject_position``: which candidate position holds
    the subject's answer (randomised per item); experts never see it, nor the model names."""

    round = models.ForeignKey(EvaluationRound, on_delete=models.CASCADE, related_name="items")
    item = models.OneToOneField(
        "curation.Item", on_delete=models.CASCADE, related_name="evaluation"
    )
    subject_position = models.PositiveSmallIntegerField()
    index = models.PositiveIntegerField()  # prompt number in the generation job

    class Meta:
        ordering = ["round", "index"]
        constraints = [
            models.UniqueConstraint(fields=["round", "index"], name="evaluationitem_unique"),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} of round {self.round_id}"


class Promotion(models.Model):
    """One entry of a project's promotion history; the newest is its current model
    (``adapter`` on its run's base model, or ``base_model`` alone when ``adapter`` is empty).
    ``override``: promoted without a passed round, confirmed by an admin. ``rollback_of``:
    this entry restored an earlier one."""

    project = models.ForeignKey(
        "curation.Project", on_delete=models.CASCADE, related_name="promotions"
    )
    adapter = models.ForeignKey(
        Adapter, null=True, blank=True, on_delete=models.PROTECT, related_name="promotions"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    evaluation_round = models.ForeignKey(
        EvaluationRound, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    override = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="promotion_current")]

    def __str__(self) -> str:
        return f"promotion {self.pk} in project {self.project_id}"


class RetrainingPolicy(models.Model):
    """A project's retraining policy (off by default). Triggers: ``min_new_decisions`` new
    accepted decisions since the last dataset version, and/or a drift alert. Action: build a
    dataset version with the previous filters, train with the previous config on the current
    base (or wait for an admin when ``require_approval``), then evaluate against the promoted
    model."""

    project = models.OneToOneField(
        "curation.Project", on_delete=models.CASCADE, related_name="retraining_policy"
    )
    enabled = models.BooleanField(default=False)
    min_new_decisions = models.PositiveIntegerField(null=True, blank=True)  # None: off
    on_drift = models.BooleanField(default=False)
    require_approval = models.BooleanField(default=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"retraining policy of project {self.project_id}"


class CycleStatus(models.TextChoices):
    RUNNING = "running", "Running"
    AWAITING_APPROVAL = "awaiting_approval", "Waiting for an admin's approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class RetrainingCycle(models.Model):
    """One automated turn of the loop. At most one in flight per project (a partial unique
    constraint, so concurrent beats cannot start two). Every step records what it made."""

    IN_FLIGHT = (CycleStatus.RUNNING, CycleStatus.AWAITING_APPROVAL)

    project = models.ForeignKey(
        "curation.Project", on_delete=models.CASCADE, related_name="retraining_cycles"
    )
    trigger = models.CharField(max_length=32)  # decisions | drift
    trigger_detail = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=24, choices=CycleStatus.choices, default=CycleStatus.RUNNING
    )
    step = models.CharField(max_length=24, default="dataset")  # dataset | training | evaluation
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    evaluation_round = models.ForeignKey(
        EvaluationRound, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    error = models.TextField(blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=models.Q(status__in=["running", "awaiting_approval"]),
                name="retrainingcycle_one_in_flight",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=CycleStatus.values), name="retrainingcycle_status"
            ),
        ]

    def __str__(self) -> str:
        return f"retraining cycle {self.pk} ({self.trigger}, {self.status})"
