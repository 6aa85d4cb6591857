"""The review queue: hand each expert the next item under a time-limited lease.

Read ``curation/queue.md`` first: it explains the locking protocol these functions share.
The one rule: **every change to an item's assignments happens while holding that item's row
lock** (``SELECT … FOR NO KEY UPDATE`` on ``curation_item``), and the item's bookkeeping
columns (``held_slots``, ``next_lapse_at``, ``review_count``, ``status``) are rewritten in the
same transaction from the assignment rows, so they are always exact at commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from curation.models import Assignment, AssignmentState, Item, ItemStatus, Project

# How many locked-but-stale candidates one claim may step over before it gives up and starts a
# fresh transaction. Staleness needs a race, so a handful is plenty.
_CANDIDATES_PER_TRANSACTION = 8
_TRANSACTIONS_PER_CLAIM = 4

HOLDING = (AssignmentState.LEASED, AssignmentState.SUBMITTED)


class QueueError(Exception):
    """Base for queue refusals a caller should show the expert."""


class LeaseLost(QueueError):
    """The expert no longer holds this item: it was released, or lapsed and taken over."""


class ItemFull(QueueError):
    """The item already has all the decisions it needs."""


@dataclass(frozen=True)
class Claim:
    item: Item
    assignment: Assignment

    @property
    def expires_at(self) -> datetime:
        return self.assignment.expires_at


def _lock_item(item_id: int) -> Item:
    return Item.objects.select_for_update(of=("self",), no_key=True).get(pk=item_id)


def _sync_item(item: Item, k: int, *, now: datetime, holders: list[Assignment] | None = None):
    """Recompute the item's queue columns from its assignments. Call holding the row lock.

    ``holders``: the item's holding assignments when the caller already has them in hand.
    """
    if holders is None:
        rows = list(
            Assignment.objects.filter(item_id=item.pk, state__in=HOLDING).values_list(
                "state", "expires_at"
            )
        )
    else:
        rows = [(a.state, a.expires_at) for a in holders if a.state in HOLDING]
    item.review_count = sum(1 for state, _ in rows if state == AssignmentState.SUBMITTED)
    item.held_slots = len(rows)
    leases = [expires for state, expires in rows if state == AssignmentState.LEASED]
    item.next_lapse_at = min(leases) if leases else None
    item.status = ItemStatus.COMPLETE if item.review_count >= k else ItemStatus.OPEN
    item.save(update_fields=["review_count", "held_slots", "next_lapse_at", "status"])


def _candidates(project: Project, expert, *, now: datetime, exclude: list[int]):
    """Open items with room for ``expert``, in hand-out order, locked with SKIP LOCKED.

    Filters on the item's own columns (re-checked by PostgreSQL when a row changed under us)
    plus "not already mine" (only this expert's own, sequential claims write those rows).
    """
    k = project.overlap
    mine = Assignment.objects.filter(item=OuterRef("pk"), expert=expert).exclude(
        state=AssignmentState.RELEASED
    )
    qs = (
        Item.objects.filter(project=project, status=ItemStatus.OPEN, review_count__lt=k)
        .filter(Q(held_slots__lt=k) | Q(next_lapse_at__lte=now))
        .filter(~Exists(mine))
        .order_by("-priority", "created_at", "id")
    )
    if exclude:
        qs = qs.exclude(pk__in=exclude)
    return qs.select_for_update(skip_locked=True, of=("self",), no_key=True)[:1]


def queue_claim_next(*, project: Project, expert, now: datetime | None = None) -> Claim | None:
    """The expert's next item under a lease, or None when nothing is left for them.

    Opens its own short transactions (do not call inside one that holds item locks). An expert
    who still holds a lease in the project, live or lapsed but not taken over, gets that item
    back with a fresh lease. Otherwise the highest-priority, oldest open item that still needs
    a decision, that this expert has not decided or skipped, and that has a free place (fewer
    than k live leases + decisions, or a lapsed lease to take over).
    """
    for attempt in range(_TRANSACTIONS_PER_CLAIM):
        try:
            with transaction.atomic():
                return _claim_in_transaction(project, expert, now=now or timezone.now())
        except _Stale:
            continue
        except IntegrityError:
            # The same expert claiming twice at once (a double click): one insert wins the
            # one-lease-per-expert constraint; the next attempt returns that lease.
            if attempt == _TRANSACTIONS_PER_CLAIM - 1:
                raise
    return None


class _Stale(Exception):
    """Every candidate this transaction locked had been filled by a racing claim."""


def _claim_in_transaction(project: Project, expert, *, now: datetime) -> Claim | None:
    claim = _reclaim_current(project, expert, now=now)
    if claim is not None:
        return claim
    stale: list[int] = []
    for _ in range(_CANDIDATES_PER_TRANSACTION):
        item = next(iter(_candidates(project, expert, now=now, exclude=stale)), None)
        if item is None:
            return None
        claim = _take_slot(project, expert, item, now=now)
        if claim is not None:
            return claim
        stale.append(item.pk)
    raise _Stale


def _reclaim_current(project: Project, expert, *, now: datetime) -> Claim | None:
    current = (
        Assignment.objects.filter(project=project, expert=expert, state=AssignmentState.LEASED)
        .values_list("item_id", flat=True)
        .first()
    )
    if current is None:
        return None
    item = _lock_item(current)
    assignment = Assignment.objects.filter(
        item=item, expert=expert, state=AssignmentState.LEASED
    ).first()
    if assignment is None:  # taken over between the two reads
        return None
    assignment.expires_at = now + timedelta(seconds=project.lease_seconds)
    assignment.save(update_fields=["expires_at", "updated_at"])
    _sync_item(item, project.overlap, now=now)
    item.project = project
    return Claim(item=item, assignment=assignment)


def _take_slot(project: Project, expert, item: Item, *, now: datetime) -> Claim | None:
    """Authoritative check and write, holding the item's row lock. None if the candidate was
    stale (a racing claim filled it first)."""
    k = project.overlap
    rows = list(Assignment.objects.filter(item_id=item.pk))
    if any(a.expert_id == expert.pk and a.state != AssignmentState.RELEASED for a in rows):
        return None
    holding = [a for a in rows if a.state in HOLDING]
    if sum(a.state == AssignmentState.SUBMITTED for a in holding) >= k:
        return None
    live = [a for a in holding if a.state == AssignmentState.SUBMITTED or a.expires_at > now]
    if len(live) >= k:
        return None
    used = {a.slot for a in holding}
    free = sorted(set(range(k)) - used)
    if free:
        slot = free[0]
    else:  # every slot number is held, so at least one holder is a lapsed lease: take it over
        lapsed = min((a for a in holding if a not in live), key=lambda a: (a.expires_at, a.slot))
        slot = lapsed.slot
        lapsed.state, lapsed.slot = AssignmentState.RELEASED, None
        lapsed.save(update_fields=["state", "slot", "updated_at"])
    # The expert's own lapsed lease elsewhere in the project was handled by _reclaim_current;
    # a released row of theirs on this item is reused (unique per item and expert).
    expires = now + timedelta(seconds=project.lease_seconds)
    mine = next((a for a in rows if a.expert_id == expert.pk), None)
    if mine is None:
        mine = Assignment(project=project, item=item, expert=expert)
    mine.state, mine.slot, mine.leased_at, mine.expires_at = (
        AssignmentState.LEASED,
        slot,
        now,
        expires,
    )
    mine.save()
    holders = [a for a in rows if a.state in HOLDING and a.expert_id != expert.pk] + [mine]
    _sync_item(item, k, now=now, holders=holders)
    item.project = project
    return Claim(item=item, assignment=mine)


def _held_assignment(item: Item, expert) -> Assignment:
    assignment = Assignment.objects.filter(item=item, expert=expert, state__in=HOLDING).first()
    if assignment is None:
        raise LeaseLost("You no longer hold this item: it was released or given to someone else.")
    return assignment


@transaction.atomic
def queue_lease_renew(*, item: Item, expert, now: datetime | None = None) -> Assignment:
    """Extend the expert's lease on ``item`` by the project's lease length.

    A lapsed lease that nobody took over is renewed too (the place was still the expert's).
    Raises ``LeaseLost`` when the expert holds no lease on the item.
    """
    now = now or timezone.now()
    item = _lock_item(item.pk)
    project = Project.objects.get(pk=item.project_id)
    assignment = _held_assignment(item, expert)
    if assignment.state != AssignmentState.LEASED:
        raise LeaseLost("You already decided this item.")
    assignment.expires_at = now + timedelta(seconds=project.lease_seconds)
    assignment.save(update_fields=["expires_at", "updated_at"])
    _sync_item(item, project.overlap, now=now)
    return assignment


@transaction.atomic
def queue_lease_release(*, item: Item, expert, now: datetime | None = None) -> bool:
    """Give the item back to the pool. False when the expert held no lease on it."""
    now = now or timezone.now()
    item = _lock_item(item.pk)
    updated = Assignment.objects.filter(
        item=item, expert=expert, state=AssignmentState.LEASED
    ).update(state=AssignmentState.RELEASED, slot=None, updated_at=now)
    if updated:
        _sync_item(item, Project.objects.get(pk=item.project_id).overlap, now=now)
    return bool(updated)


def queue_record_decision(*, item: Item, expert, counted: bool, now: datetime | None = None):
    """Turn the expert's lease into a decision; for the feedback app's review services.

    Call inside ``transaction.atomic``; locks the item row. ``counted`` is False for a skip:
    the place goes back to the pool and the item is never offered to this expert again.
    A lapsed lease still counts if nobody took its place over. Raises ``LeaseLost`` when the
    place is gone and ``ItemFull`` when the item meanwhile got all its decisions.
    Returns the item, with its status and counts updated.
    """
    now = now or timezone.now()
    item = _lock_item(item.pk)
    project = Project.objects.get(pk=item.project_id)
    assignment = Assignment.objects.filter(item=item, expert=expert).first()
    if assignment is None or assignment.state == AssignmentState.RELEASED:
        if item.review_count >= project.overlap:
            raise ItemFull("This item already has all the reviews it needs.")
        raise LeaseLost("You no longer hold this item: it was released or given to someone else.")
    if assignment.state != AssignmentState.LEASED:
        return item  # already decided: the caller's idempotency handles the rest
    if counted:
        assignment.state = AssignmentState.SUBMITTED
    else:
        assignment.state, assignment.slot = AssignmentState.SKIPPED, None
    assignment.save(update_fields=["state", "slot", "updated_at"])
    _sync_item(item, project.overlap, now=now)
    return item


@transaction.atomic
def item_refresh_status(*, item: Item) -> Item:
    """Recompute an item's counts and status from its assignments, under its row lock."""
    item = _lock_item(item.pk)
    _sync_item(item, Project.objects.get(pk=item.project_id).overlap, now=timezone.now())
    return item


def project_items_refresh_status(*, project: Project) -> int:
    """After k changed: reopen or complete the project's items in one statement. Returns the
    number of items whose status changed."""
    k = project.overlap
    reopened = Item.objects.filter(
        project=project, status=ItemStatus.COMPLETE, review_count__lt=k
    ).update(status=ItemStatus.OPEN)
    completed = Item.objects.filter(
        project=project, status=ItemStatus.OPEN, review_count__gte=k
    ).update(status=ItemStatus.COMPLETE)
    return reopened + completed


def queue_sweep_lapsed(*, older_than: timedelta = timedelta(0), limit: int = 1000) -> int:
    """Release leases that lapsed (housekeeping for counts; the queue never needs it).

    Skips items locked by a claim in progress; returns how many leases were released.
    """
    now = timezone.now()
    lapsed_items = (
        Item.objects.filter(next_lapse_at__lte=now - older_than)
        .order_by("next_lapse_at")
        .values_list("id", flat=True)[:limit]
    )
    released = 0
    for item_id in list(lapsed_items):
        with transaction.atomic():
            item = (
                Item.objects.select_for_update(skip_locked=True, of=("self",), no_key=True)
                .filter(pk=item_id)
                .first()
            )
            if item is None:
                continue
            released += Assignment.objects.filter(
                item=item, state=AssignmentState.LEASED, expires_at__lte=now - older_than
            ).update(state=AssignmentState.RELEASED, slot=None, updated_at=now)
            _sync_item(item, Project.objects.get(pk=item.project_id).overlap, now=now)
    return released
