"""Reads that are more than a ``get``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from curation.models import (
    Assignment,
    Candidate,
    GuidelineVersion,
    ImportJob,
    Item,
    Membership,
    Project,
)
from curation.permissions import projects_visible_to
from redline.lib.db import hot_cursor


def project_list_for_user(*, user) -> QuerySet[Project]:
    return projects_visible_to(user).select_related("created_by").order_by("name")


def membership_list(*, project: Project) -> QuerySet[Membership]:
    return project.memberships.select_related("user").order_by("role", "user__username")


# ---- Guidelines ---------------------------------------------------------------------------


def guideline_current(*, project: Project) -> GuidelineVersion | None:
    """The version experts are shown: the latest one, or None before any is published."""
    return (
        GuidelineVersion.objects.filter(project=project)
        .select_related("created_by")
        .order_by("-version")
        .first()
    )


def guideline_list(*, project: Project) -> QuerySet[GuidelineVersion]:
    """Every version of the project's guidelines, newest first (text deferred)."""
    return (
        GuidelineVersion.objects.filter(project=project)
        .select_related("created_by")
        .defer("text")
        .order_by("-version")
    )


# ---- Items --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ItemFilters:
    """What the item browser and ``GET /projects/{slug}/items/`` filter on; None means any."""

    status: str | None = None
    model: str | None = None
    source: str | None = None
    q: str | None = None
    created_from: dt.date | None = None
    created_to: dt.date | None = None  # inclusive


def _start_of_day(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def item_list(*, project: Project, filters: ItemFilters | None = None) -> QuerySet[Item]:
    """The project's items matching ``filters``, newest first, candidates prefetched in one query.

    Text search (``q``) is a case-insensitive substring match (SQL ``ILIKE``, via Django's
    ``icontains``) over the prompt, the chat messages (their JSON text) and every candidate's
    output. It needs no extra index and is exact, but it scans the project's rows: fine for
    browsing, not a full-text search engine. The date range is on ``created_at`` in the
    site's time zone, both ends inclusive, written as a range on the column (not ``__date``)
    so an index on (project, status, created_at) can serve it.
    """
    filters = filters or ItemFilters()
    items = Item.objects.filter(project=project)
    if filters.status:
        items = items.filter(status=filters.status)
    if filters.source:
        items = items.filter(source=filters.source)
    if filters.model:
        # EXISTS rather than a join: an item with two candidates of that model is listed once.
        items = items.filter(
            Exists(Candidate.objects.filter(item=OuterRef("pk"), model=filters.model))
        )
    if filters.q:
        items = items.filter(
            Q(prompt__icontains=filters.q)
            | Q(messages__icontains=filters.q)
            | Exists(Candidate.objects.filter(item=OuterRef("pk"), output__icontains=filters.q))
        )
    if filters.created_from:
        items = items.filter(created_at__gte=_start_of_day(filters.created_from))
    if filters.created_to:
        next_day = filters.created_to + dt.timedelta(days=1)
        items = items.filter(created_at__lt=_start_of_day(next_day))
    return items.prefetch_related(
        Prefetch("candidates", queryset=Candidate.objects.order_by("position"))
    ).order_by("-created_at", "-id")


def item_assignment_history(*, item: Item) -> QuerySet[Assignment]:
    """Who holds or held the item, most recent first, experts joined in the same query."""
    return item.assignments.select_related("expert").order_by("-leased_at", "-id")


# ---- Queue --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCounts:
    left_for_me: int  # open items I have not decided, skipped or taken
    in_progress: int  # live leases in the project, anyone's
    done_by_me: int  # my counted decisions
    complete: int
    total: int

    @property
    def percent_complete(self) -> int:
        return round(100 * self.complete / self.total) if self.total else 0


def queue_counts(*, project: Project, expert) -> QueueCounts:
    """Counts for the queue page: plain counts, never taken from the SKIP LOCKED claim query."""
    from django.db.models import Count

    totals = Item.objects.filter(project=project).aggregate(
        total=Count("id"), complete=Count("id", filter=Q(status="complete"))
    )
    mine = Assignment.objects.filter(project=project, expert=expert)
    mine_open = mine.filter(item__status="open").exclude(state="released").count()
    return QueueCounts(
        left_for_me=max(totals["total"] - totals["complete"] - mine_open, 0),
        in_progress=Assignment.objects.filter(
            project=project, state="leased", expires_at__gt=timezone.now()
        ).count(),
        done_by_me=mine.filter(state="submitted").count(),
        complete=totals["complete"],
        total=totals["total"],
    )


def queue_current_assignment(*, project: Project, expert) -> Assignment | None:
    """The expert's live lease in the project, with its item and candidates, if any."""
    return (
        Assignment.objects.filter(
            project=project, expert=expert, state="leased", expires_at__gt=timezone.now()
        )
        .select_related("item")
        .prefetch_related("item__candidates")
        .first()
    )


def import_job_list(*, project: Project) -> QuerySet[ImportJob]:
    return (
        ImportJob.objects.filter(project=project)
        .select_related("created_by")
        .defer("errors")
        .order_by("-created_at", "-id")
    )


_QUEUE_CANDIDATES_SQL = (
    f"SELECT id, output, model FROM {Candidate._meta.db_table}"  # noqa: S608 (table name)
    " WHERE item_id = %s ORDER BY position"
)


def queue_item_payload(*, item: Item) -> dict:
    """An item as the queue hands it out (the ``Claim`` schema in curation/api/queue.py):
    what to review and nothing about other experts. Built by hand on the claim's hot path,
    where a DRF serializer cost more than the claim itself; the API tests pin the shape.
    The candidates' statement is fixed, so it goes through ``hot_cursor`` (prepared once per
    PostgreSQL connection): it runs after every submit with ``claim_next``."""
    with hot_cursor() as cursor:
        cursor.execute(_QUEUE_CANDIDATES_SQL, [item.pk])
        candidates = [{"id": i, "output": o, "model": m} for i, o, m in cursor.fetchall()]
    payload = {"id": item.pk, "external_id": item.external_id}
    if item.messages:
        payload["messages"] = item.messages
    else:
        payload["prompt"] = item.prompt
    payload["candidates"] = candidates
    payload["metadata"] = item.metadata
    return payload
