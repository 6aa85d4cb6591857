"""Expert decisions and what becomes of them.

A ``Review`` is one expert's decision on one item (unique per item and expert). It is never
overwritten silently: every save goes through ``feedback.services`` and writes an immutable
``ReviewRevision`` (revision 1 is the original decision, later ones are amendments), plus an
``AuditEvent``. Once an item has its k counted reviews, ``ItemOutcome`` holds the final
decision: agreed by the experts, or set by a manager in adjudication. ``GoldAnswer`` marks an
item whose expected answer is known, to score experts on.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from curation.models import Candidate, GuidelineVersion, Item, Project


class Verdict(models.TextChoices):
    ACCEPT = "accept", "Accept"
    CORRECT = "correct", "Correct"
    REJECT = "reject", "Reject"
    SKIP = "skip", "Skip"


COUNTED_VERDICTS = (Verdict.ACCEPT, Verdict.CORRECT, Verdict.REJECT)


class Review(models.Model):
    """One expert's current decision on one item. Fields hold the latest revision."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="reviews")
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    # The candidate the verdict is about (the one accepted, corrected or rejected). For a
    # comparison it is the preferred one (or the first shown, on a tie).
    candidate = models.ForeignKey(
        Candidate, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    corrected_output = models.TextField(blank=True)
    preferred_candidate = models.ForeignKey(
        Candidate, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    tie = models.BooleanField(default=False)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)  # overall, 1..5
    labels = models.JSONField(default=dict, blank=True)  # {question key: answer}
    rationale = models.TextField(blank=True)
    # Candidate ids in the order this expert was shown them (compare items are shuffled per
    # expert so position cannot bias the choice).
    candidate_order = models.JSONField(default=list, blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    guideline_version = models.ForeignKey(
        GuidelineVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    idempotency_key = models.CharField(max_length=100, blank=True)
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "expert"], name="review_unique_expert"),
            models.UniqueConstraint(
                fields=["expert", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="review_unique_idempotency_key",
            ),
            models.CheckConstraint(
                condition=models.Q(verdict__in=Verdict.values), name="review_verdict_valid"
            ),
            models.CheckConstraint(
                condition=~models.Q(tie=True, preferred_candidate__isnull=False),
                name="review_tie_or_preferred",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "created_at"], name="review_project_created"),
            models.Index(fields=["expert", "-updated_at"], name="review_expert_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.expert} {self.verdict} item {self.item_id} (rev {self.revision})"

    @property
    def counted(self) -> bool:
        return self.verdict != Verdict.SKIP

    @property
    def preference(self) -> str:
        """``"tie"``, the preferred candidate id as text, or ``""``."""
        if self.tie:
            return "tie"
        return str(self.preferred_candidate_id) if self.preferred_candidate_id else ""


class ReviewRevision(models.Model):
    """An immutable snapshot of a review as it was saved: revision 1 is the decision, later
    numbers are amendments. Nothing here is ever updated or deleted by the application."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    editor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    data = models.JSONField()  # every decision field, as saved
    changed = models.JSONField(default=list)  # field names that differ from the revision before
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["review", "number"]
        constraints = [
            models.UniqueConstraint(fields=["review", "number"], name="revision_unique_number")
        ]

    def __str__(self) -> str:
        return f"review {self.review_id} rev {self.number}"


class Outcome(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    NEEDS_ADJUDICATION = "needs_adjudication", "Needs adjudication"


class OutcomeSource(models.TextChoices):
    UNANIMOUS = "unanimous", "All experts agreed"
    MAJORITY = "majority", "Majority of experts"
    ADJUDICATED = "adjudicated", "Adjudicated by a manager"


class ItemOutcome(models.Model):
    """The final decision on an item once it has k counted reviews.

    ``final_text`` is what training data takes as the good answer (the accepted candidate's
    output, the agreed correction, or the adjudicator's text); ``agreement`` is the share of
    experts whose decision matches the outcome (1.0 when unanimous).
    """

    item = models.OneToOneField(
        Item, on_delete=models.CASCADE, primary_key=True, related_name="outcome"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    source = models.CharField(max_length=16, choices=OutcomeSource.choices)
    final_candidate = models.ForeignKey(
        Candidate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    final_text = models.TextField(blank=True)
    preferred_candidate = models.ForeignKey(
        Candidate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tie = models.BooleanField(default=False)
    agreement = models.FloatField(null=True, blank=True)
    review_count = models.PositiveIntegerField(default=0)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    note = models.TextField(blank=True)
    decided_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(outcome__in=Outcome.values), name="outcome_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(source__in=OutcomeSource.values), name="outcome_source_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["project", "outcome", "decided_at"], name="outcome_project")
        ]

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.outcome} ({self.source})"


class GoldAnswer(models.Model):
    """A known answer for an item, set by a manager. Experts get gold items like any other and
    cannot tell; their decisions on them are scored (see ``selectors.gold_scores``)."""

    item = models.OneToOneField(
        Item, on_delete=models.CASCADE, primary_key=True, related_name="gold"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    verdict = models.CharField(
        max_length=16,
        choices=[(v, label) for v, label in Verdict.choices if v != Verdict.SKIP],
    )
    preferred_candidate = models.ForeignKey(
        Candidate, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    tie = models.BooleanField(default=False)
    labels = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"gold for item {self.item_id}"


class AuditAction(models.TextChoices):
    REVIEW_SUBMITTED = "review.submitted", "Review submitted"
    REVIEW_AMENDED = "review.amended", "Review amended"
    ITEM_ADJUDICATED = "item.adjudicated", "Item adjudicated"
    GOLD_SET = "gold.set", "Gold answer set"
    GOLD_CLEARED = "gold.cleared", "Gold answer cleared"


class AuditEvent(models.Model):
    """Append-only record of who did what to which decision."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    item = models.ForeignKey(
        Item, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    review = models.ForeignKey(
        Review, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="audit_project_recent")]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} at {self.created_at:%Y-%m-%d %H:%M}"


class DriftMetric:
    """What a drift alert measured: the share of counted decisions that were a correction or
    a rejection (a one-sided two-proportion z-test), or the answers to one label question
    (a chi-square test of homogeneity), named ``labels:<question key>``."""

    NON_ACCEPT_RATE = "non_accept_rate"
    LABELS_PREFIX = "labels:"


class DriftAlert(models.Model):
    """A significant change in how experts judge one model version's outputs: the current
    window against the baseline window before it (``feedback.services.drift``).

    One alert at most per (project, model, metric, window end): the periodic check can run
    any number of times, concurrently too, without repeating itself. Delivery to the
    project's webhook is recorded here (``delivered_at``, ``delivery_error``).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=200)  # the candidate's model (version) label
    metric = models.CharField(max_length=100)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    baseline_start = models.DateTimeField()
    baseline_end = models.DateTimeField()
    # For rates: the two shares; for label distributions: the total variation distance in
    # current_value (baseline_value empty). The distributions themselves are in details.
    baseline_value = models.FloatField(null=True, blank=True)
    current_value = models.FloatField(null=True, blank=True)
    baseline_n = models.PositiveIntegerField()
    current_n = models.PositiveIntegerField()
    statistic = models.FloatField()  # z, or chi-square
    p_value = models.FloatField()
    details = models.JSONField(default=dict, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "model", "metric", "window_end"], name="driftalert_unique_window"
            )
        ]
        indexes = [models.Index(fields=["project", "-created_at"], name="driftalert_recent")]

    def __str__(self) -> str:
        return f"{self.project_id} {self.model} {self.metric} to {self.window_end:%Y-%m-%d}"


class AlertWebhook(models.Model):
    """Where a project's drift alerts are POSTed, signed with ``secret`` (HMAC-SHA256 of the
    raw body, header ``X-Redline-Signature: sha256=<hex>``). The secret is generated by
    Redline and shown to the project's managers; it never appears in an alert."""

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, primary_key=True, related_name="alert_webhook"
    )
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"webhook of project {self.project_id}"


# ---- Label Studio interop (feedback.labelstudio) ------------------------------------------


class UnknownAnnotatorPolicy(models.TextChoices):
    """What a pull does with a Label Studio annotator whose email matches no project member."""

    CREATE = "create", "Add them as experts of the project (a new account when needed)"
    SKIP = "skip", "Skip their annotations (the pull report lists them)"


class LabelStudioConnection(models.Model):
    """A project's link to one Label Studio server and project (``feedback.labelstudio``).

    ``token`` is the Label Studio API token (personal access token or legacy token); it stays
    on the server: pages and the API only ever show ``token_masked``. ``webhook_secret`` is
    generated by Redline and authenticates Label Studio's webhook calls for this project.
    """

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, primary_key=True, related_name="label_studio"
    )
    url = models.URLField(max_length=500)
    token = models.TextField()
    # Redline's own address as Label Studio reaches it, for the webhook it registers.
    redline_url = models.URLField(max_length=500, blank=True)
    unknown_annotators = models.CharField(
        max_length=16, choices=UnknownAnnotatorPolicy.choices, default=UnknownAnnotatorPolicy.SKIP
    )
    ls_project_id = models.PositiveIntegerField(null=True, blank=True)
    ls_webhook_id = models.PositiveIntegerField(null=True, blank=True)
    webhook_secret = models.CharField(max_length=128)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(unknown_annotators__in=UnknownAnnotatorPolicy.values),
                name="lsconnection_policy_valid",
            )
        ]

    def __str__(self) -> str:
        return f"Label Studio link of project {self.project_id}"

    @property
    def token_masked(self) -> str:
        """The token as it may be shown: its last four characters only."""
        if not self.token:
            return ""
        tail = self.token[-4:] if len(self.token) >= 12 else ""
        return f"••••••••{tail}"


class LabelStudioTask(models.Model):
    """A Redline item pushed to (or imported from) a Label Studio task. One task per item and
    one item per task in a project, so pushing again never duplicates a task."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    # "server": a task of the connected server; "file": a task of an imported export file.
    origin = models.CharField(max_length=16, default="server")
    ls_task_id = models.PositiveBigIntegerField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "origin", "item"], name="lstask_unique_item"
            ),
            models.UniqueConstraint(
                fields=["project", "origin", "ls_task_id"], name="lstask_unique_task"
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} ↔ {self.origin} task {self.ls_task_id}"


class LabelStudioAnnotation(models.Model):
    """One Label Studio annotation taken in, for idempotency: a pull skips an annotation
    whose ``result_sha256`` is unchanged and amends the review when it changed."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    origin = models.CharField(max_length=16, default="server")
    ls_annotation_id = models.PositiveBigIntegerField()
    ls_task_id = models.PositiveBigIntegerField()
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="+")
    annotator_email = models.CharField(max_length=254, blank=True)
    result_sha256 = models.CharField(max_length=64)
    ls_updated_at = models.CharField(max_length=64, blank=True)  # as Label Studio sent it
    pulled_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "origin", "ls_annotation_id"], name="lsannotation_unique"
            )
        ]
        indexes = [models.Index(fields=["review"], name="lsannotation_review")]

    def __str__(self) -> str:
        return f"{self.origin} annotation {self.ls_annotation_id} → review {self.review_id}"


class LabelStudioJobKind(models.TextChoices):
    PUSH = "push", "Push items"
    PULL = "pull", "Pull annotations"
    FILE_IMPORT = "file_import", "Import an export file"


class LabelStudioJobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class LabelStudioJob(models.Model):
    """A push, pull or file import with its progress and report. ``counts`` holds what
    happened ({"created": n, "amended": n, ...}); ``errors`` the first 200 per-task problems
    ({"task", "annotation", "item", "message"}); ``unknown_annotators`` the emails a pull did
    not match (skipped or added, per the connection's policy)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=LabelStudioJobKind.choices)
    status = models.CharField(
        max_length=16, choices=LabelStudioJobStatus.choices, default=LabelStudioJobStatus.QUEUED
    )
    # The scope asked for: item ids to push, Label Studio task ids to pull (a webhook), or
    # empty for everything.
    scope = models.JSONField(default=list, blank=True)
    trigger = models.CharField(max_length=16, default="manual")  # manual | webhook | command
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    error_count = models.PositiveIntegerField(default=0)
    unknown_annotators = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=LabelStudioJobKind.values), name="lsjob_kind_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=LabelStudioJobStatus.values),
                name="lsjob_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["project", "-created_at"], name="lsjob_recent")]

    def __str__(self) -> str:
        return f"Label Studio {self.kind} {self.pk} of project {self.project_id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (LabelStudioJobStatus.SUCCEEDED, LabelStudioJobStatus.FAILED)
