from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    """A member's role in one project. Admins are staff users and need no membership."""

    EXPERT = "expert", "Expert"
    MANAGER = "manager", "Manager"


# Effective roles, ordered by what they may do; "admin" is derived from is_staff.
ROLE_RANK = {Role.EXPERT: 1, Role.MANAGER: 2, "admin": 3}


class ReviewMode(models.TextChoices):
    CORRECT = "correct", "Accept / correct"
    COMPARE = "compare", "Compare two outputs"
    LABEL = "label", "Label and rate"


def default_review_modes() -> list[str]:
    return [ReviewMode.CORRECT]


class OutcomeRule(models.TextChoices):
    """How k reviews become an item's outcome (feedback.services.outcome_decide)."""

    UNANIMOUS = "unanimous", "All experts must agree (any disagreement goes to adjudication)"
    MAJORITY = "majority", "Majority decides (ties go to adjudication)"


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Review settings; written only through services.project_settings_update, which validates.
    review_modes = models.JSONField(default=default_review_modes)
    label_schema = models.JSONField(default=list, blank=True)
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Reviews wanted per item (k).")
    lease_seconds = models.PositiveIntegerField(default=600)
    blind = models.BooleanField(default=True)
    outcome_rule = models.CharField(
        max_length=16, choices=OutcomeRule.choices, default=OutcomeRule.UNANIMOUS
    )
    # Ingestion from production (curation.services.ingest): the share of new records that
    # become queue items, and whether a given confidence score orders them (lowest first).
    ingest_sample_fraction = models.FloatField(default=0.1)
    ingest_low_confidence_first = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(overlap__gte=1, overlap__lte=50), name="project_overlap_range"
            ),
            models.CheckConstraint(
                condition=models.Q(lease_seconds__gte=30), name="project_lease_min"
            ),
            models.CheckConstraint(
                condition=models.Q(ingest_sample_fraction__gte=0, ingest_sample_fraction__lte=1),
                name="project_ingest_fraction_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.EXPERT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user"),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"


class GuidelineVersion(models.Model):
    """Reviewing guidelines in markdown. Immutable: a change is a new version; the latest is
    the one shown, and every review records the version its expert saw."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="guidelines")
    version = models.PositiveIntegerField()
    text = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="guideline_unique_version")
        ]

    def __str__(self) -> str:
        return f"{self.project} guidelines v{self.version}"


class ItemStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"


class Item(models.Model):
    """One prompt (text or chat messages) with its candidate outputs, waiting for k reviews."""

    # No index of its own: item_unique_external_id (project, external_id) starts with it.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="items", db_index=False
    )
    external_id = models.CharField(max_length=255)
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    priority = models.IntegerField(default=0)
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.OPEN)
    # Queue bookkeeping, written only by curation.services.queue under this row's lock. Kept on
    # the row itself so that a claim racing another re-checks them (PostgreSQL re-evaluates a
    # locked row's own columns, not subqueries): see curation/queue.md.
    review_count = models.PositiveIntegerField(default=0)  # counted (non-skip) decisions
    held_slots = models.PositiveSmallIntegerField(default=0)  # leases (live or lapsed) + decisions
    next_lapse_at = models.DateTimeField(null=True, blank=True)  # earliest lease expiry
    source = models.CharField(max_length=32, default="api")
    # Unindexed: nothing looks items up by import job, and every import pays for an index.
    # (Deleting an ImportJob then scans items to null the link; jobs are not deleted in bulk.)
    import_job = models.ForeignKey(
        "ImportJob",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # Browsing by date is served by item_project_status (project, status, created_at).
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="item_unique_external_id"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=ItemStatus.values), name="item_status_valid"
            ),
        ]
        indexes = [
            # Serves queue_claim_next: open items of a project in hand-out order.
            models.Index(
                "project",
                models.F("priority").desc(),
                "created_at",
                "id",
                name="item_queue_open",
                condition=models.Q(status="open"),
            ),
            models.Index(fields=["project", "status", "created_at"], name="item_project_status"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}:{self.external_id}"

    @property
    def display_prompt(self) -> str:
        if self.messages:
            return "\n\n".join(f"{m['role']}: {m['content']}" for m in self.messages)
        return self.prompt


class Candidate(models.Model):
    # No index of its own: candidate_unique_position (item, position) starts with it.
    item = models.ForeignKey(
        Item, on_delete=models.CASCADE, related_name="candidates", db_index=False
    )
    position = models.PositiveSmallIntegerField()
    output = models.TextField()
    model = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["item", "position"]
        constraints = [
            models.UniqueConstraint(fields=["item", "position"], name="candidate_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.item} #{self.position}"


class AssignmentState(models.TextChoices):
    LEASED = "leased", "Leased"  # live while expires_at is in the future
    SUBMITTED = "submitted", "Submitted"  # a counted decision: keeps its slot for good
    SKIPPED = "skipped", "Skipped"  # the expert skipped: slot freed, never offered again
    RELEASED = "released", "Released"  # given back or lapsed and taken over: slot freed


class Assignment(models.Model):
    """One expert's hold on one item. See curation/queue.md for the protocol.

    ``slot`` (0..k-1) is set while the assignment holds one of the item's k places (a live
    lease or a counted decision); the unique (item, slot) constraint means no item can ever
    be held by more than k experts, whatever the application does.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    state = models.CharField(max_length=16, choices=AssignmentState.choices)
    slot = models.PositiveSmallIntegerField(null=True, blank=True)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "expert"], name="assignment_unique_expert"),
            models.UniqueConstraint(fields=["item", "slot"], name="assignment_unique_slot"),
            # At most one lease row per expert and project: "my current item".
            models.UniqueConstraint(
                fields=["project", "expert"],
                condition=models.Q(state="leased"),
                name="assignment_one_lease_per_expert",
            ),
            models.CheckConstraint(
                condition=models.Q(state__in=AssignmentState.values), name="assignment_state_valid"
            ),
            # Leased and submitted rows hold a slot; skipped and released ones do not.
            models.CheckConstraint(
                condition=(
                    models.Q(state__in=["leased", "submitted"], slot__isnull=False)
                    | models.Q(state__in=["skipped", "released"], slot__isnull=True)
                ),
                name="assignment_slot_matches_state",
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="assignment_expires")]

    def __str__(self) -> str:
        return f"{self.expert} on {self.item_id} ({self.state})"


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    VALIDATING = "validating", "Validating"
    IMPORTING = "importing", "Importing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ImportJob(models.Model):
    """One uploaded file (or JSON body) being validated and imported, all or nothing."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=ImportStatus.choices, default=ImportStatus.QUEUED
    )
    format = models.CharField(max_length=8)  # jsonl | csv | json
    filename = models.CharField(max_length=255, blank=True)
    path = models.CharField(max_length=1024, blank=True)  # under STORAGE_DIR/imports/
    size_bytes = models.BigIntegerField(default=0)
    lines_total = models.PositiveIntegerField(default=0)
    lines_done = models.PositiveIntegerField(default=0)
    imported_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)  # the first 100: {line, field, message}
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=ImportStatus.values), name="importjob_status_valid"
            )
        ]

    def __str__(self) -> str:
        return f"import {self.pk} into {self.project} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (ImportStatus.SUCCEEDED, ImportStatus.FAILED)


class ProductionOutput(models.Model):
    """One answer a production model gave, posted to the ingestion API.

    Every record is kept (monitoring counts volume per model version from these rows); a
    stable sample of them becomes queue items (``item``, source ``production``). Idempotent
    per client-supplied id: ``(project, client_id)`` is unique and a repeat is skipped.
    """

    # No index of its own: productionoutput_unique_client_id (project, client_id) starts with it.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="production_outputs", db_index=False
    )
    client_id = models.CharField(max_length=200)
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    output = models.TextField()
    model = models.CharField(max_length=200, blank=True)
    adapter = models.CharField(max_length=200, blank=True)
    confidence = models.FloatField(null=True, blank=True)  # 0..1, higher is surer
    metadata = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField()
    sampled = models.BooleanField(default=False)
    # The queue item the record became when sampled.
    item = models.ForeignKey(
        Item, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "client_id"], name="productionoutput_unique_client_id"
            ),
            models.CheckConstraint(
                condition=models.Q(confidence__isnull=True)
                | models.Q(confidence__gte=0, confidence__lte=1),
                name="productionoutput_confidence_range",
            ),
        ]
        indexes = [
            # Volume per window: a project's records by time.
            models.Index(fields=["project", "received_at"], name="productionoutput_received"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.client_id}"
