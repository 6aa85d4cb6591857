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

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from curation.models import Assignment, AssignmentState, Item, ItemStatus, Project
from redline.lib.db import hot_cursor
from redline.lib.rows import RowReader

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


# The claim path runs on every expert action, so it speaks SQL directly: the ORM spent more
# time compiling these statements than PostgreSQL spent running them (bench/claim_bench.py).
# Reads go through RowReader so values are converted as the ORM would (Model.objects.raw()
# cost several times the query itself); on PostgreSQL an assignment's write and its item's
# bookkeeping go to the server as one statement (bench/review_bench.py).
_ITEM = Item._meta.db_table
_ASSIGNMENT = Assignment._meta.db_table
_PROJECT = Project._meta.db_table
_ITEMS = RowReader(Item)
_ASSIGNMENTS = RowReader(Assignment)


def _lock_clause(*, skip_locked: bool = False, of: str = "") -> str:
    """Row-lock suffix. SQLite has no row locks; its IMMEDIATE transactions (settings) make
    writers take turns, which gives the same guarantee for a one-machine demo."""
    if connection.vendor != "postgresql":
        return ""
    return (
        " FOR NO KEY UPDATE" + (f" OF {of}" if of else "") + (" SKIP LOCKED" if skip_locked else "")
    )


def _db(value: datetime | None):
    return connection.ops.adapt_datetimefield_value(value)


def _lock_item(item_id: int) -> Item:
    rows = _ITEMS.fetch(
        f"SELECT {_ITEMS.columns()} FROM {_ITEM} WHERE id = %s{_lock_clause()}", [item_id]
    )
    if not rows:
        raise Item.DoesNotExist(f"No item {item_id}.")
    return rows[0]


def _assignments(item_id: int) -> list[Assignment]:
    return _ASSIGNMENTS.fetch(
        f"SELECT {_ASSIGNMENTS.columns()} FROM {_ASSIGNMENT} WHERE item_id = %s", [item_id]
    )


def _overlap(project_id: int) -> int:
    with hot_cursor() as cursor:
        cursor.execute(f"SELECT overlap FROM {_PROJECT} WHERE id = %s", [project_id])
        return cursor.fetchone()[0]


def _assignment_sql(assignment: Assignment, *, now: datetime) -> tuple[str, list]:
    """The statement that writes one assignment row (insert ``RETURNING id`` when new)."""
    assignment.updated_at = now
    values = [
        assignment.state,
        assignment.slot,
        _db(assignment.leased_at),
        _db(assignment.expires_at),
        _db(now),
    ]
    if assignment.pk:
        return (
            f"UPDATE {_ASSIGNMENT} SET state = %s, slot = %s, leased_at = %s, expires_at = %s,"
            " updated_at = %s WHERE id = %s",
            [*values, assignment.pk],
        )
    return (
        f"INSERT INTO {_ASSIGNMENT} (state, slot, leased_at, expires_at, updated_at,"
        " project_id, item_id, expert_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        [*values, assignment.project_id, assignment.item_id, assignment.expert_id],
    )


def _save_assignment(assignment: Assignment, *, now: datetime) -> None:
    """Write one assignment row (insert when new). Constraint violations surface as Django's
    ``IntegrityError``."""
    sql, params = _assignment_sql(assignment, now=now)
    with hot_cursor() as cursor:
        cursor.execute(sql, params)
        if not assignment.pk:
            assignment.pk = cursor.fetchone()[0]


def _item_sync_sql(item: Item, k: int, *, assignments: list[Assignment]) -> tuple[str, list]:
    """Recompute the item's queue columns from all its assignments (as they are now, after the
    caller's changes); returns the statement that writes them."""
    holding = [a for a in assignments if a.state in HOLDING]
    item.review_count = sum(a.state == AssignmentState.SUBMITTED for a in holding)
    item.held_slots = len(holding)
    leases = [a.expires_at for a in holding if a.state == AssignmentState.LEASED]
    item.next_lapse_at = min(leases) if leases else None
    item.status = ItemStatus.COMPLETE if item.review_count >= k else ItemStatus.OPEN
    return (
        f"UPDATE {_ITEM} SET review_count = %s, held_slots = %s, next_lapse_at = %s,"
        " status = %s WHERE id = %s",
        [item.review_count, item.held_slots, _db(item.next_lapse_at), item.status, item.pk],
    )


def _sync_item(item: Item, k: int, *, assignments: list[Assignment]) -> None:
    """Recompute the item's queue columns from all its assignments (as they are now, after the
    caller's changes) and write them. Call holding the item's row lock."""
    sql, params = _item_sync_sql(item, k, assignments=assignments)
    with hot_cursor() as cursor:
        cursor.execute(sql, params)


def _save_and_sync(assignment: Assignment, item: Item, k: int, *, assignments, now) -> None:
    """``_save_assignment`` then ``_sync_item`` (``assignments`` includes ``assignment``).
    On PostgreSQL both go as one statement (a data-modifying CTE): one round trip less on
    every claim and decision. Only for a single assignment write: two writes in one statement
    could meet the unique slot constraint in either order."""
    if connection.vendor != "postgresql":
        _save_assignment(assignment, now=now)
        _sync_item(item, k, assignments=assignments)
        return
    write_sql, write_params = _assignment_sql(assignment, now=now)
    sync_sql, sync_params = _item_sync_sql(item, k, assignments=assignments)
    result = "SELECT 1" if assignment.pk else "SELECT id FROM a"  # a new row: its id
    with hot_cursor() as cursor:
        cursor.execute(
            f"WITH a AS ({write_sql}), s AS ({sync_sql}) {result}", [*write_params, *sync_params]
        )
        if not assignment.pk:
            assignment.pk = cursor.fetchone()[0]


def claim_candidate_sql(
    project: Project, expert, *, now: datetime, exclude: list[int] = ()
) -> tuple[str, list]:
    """The candidate query: open items with room for ``expert``, in hand-out order, locked
    with SKIP LOCKED. Served by the partial index ``item_queue_open``.

    Filters on the item's own columns (re-checked by PostgreSQL when a row changed under us)
    plus "not already mine" (only this expert's own, sequential claims write those rows).
    """
    k = project.overlap
    not_in = f" AND i.id NOT IN ({', '.join(['%s'] * len(exclude))})" if exclude else ""
    sql = (
        f"SELECT {_ITEMS.columns('i')} FROM {_ITEM} i"
        " WHERE i.project_id = %s AND i.status = 'open' AND i.review_count < %s"
        " AND (i.held_slots < %s OR i.next_lapse_at <= %s)"
        f" AND NOT EXISTS (SELECT 1 FROM {_ASSIGNMENT} a WHERE a.item_id = i.id"
        " AND a.expert_id = %s AND a.state <> 'released')"
        f"{not_in}"
        " ORDER BY i.priority DESC, i.created_at, i.id LIMIT 1"
        f"{_lock_clause(skip_locked=True, of='i')}"
    )
    return sql, [project.pk, k, k, _db(now), expert.pk, *exclude]


def queue_claim_next(
    *, project: Project, expert, now: datetime | None = None, after_decision: bool = False
) -> Claim | None:
    """The expert's next item under a lease, or None when nothing is left for them.

    Opens its own short transactions (do not call inside one that holds item locks). An expert
    who still holds a lease in the project, live or lapsed but not taken over, gets that item
    back with a fresh lease. Otherwise the highest-priority, oldest open item that still needs
    a decision, that this expert has not decided or skipped, and that has a free place (fewer
    than k live leases + decisions, or a lapsed lease to take over).

    ``after_decision``: the caller has just committed the expert's decision on their leased
    item of this project, so they hold no lease here (one lease per expert and project) and
    the first attempt does not look for one. A lease that a concurrent request of the same
    expert claimed meanwhile is still handed back: the new lease's insert trips the
    one-lease constraint and the next attempt finds it.
    """
    for attempt in range(_TRANSACTIONS_PER_CLAIM):
        try:
            with transaction.atomic():
                return _claim_in_transaction(
                    project,
                    expert,
                    now=now or timezone.now(),
                    reclaim=not (after_decision and attempt == 0),
                )
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


def _claim_in_transaction(
    project: Project, expert, *, now: datetime, reclaim: bool = True
) -> Claim | None:
    if reclaim:
        claim = _reclaim_current(project, expert, now=now)
        if claim is not None:
            return claim
    stale: list[int] = []
    for _ in range(_CANDIDATES_PER_TRANSACTION):
        sql, params = claim_candidate_sql(project, expert, now=now, exclude=stale)
        item = next(iter(_ITEMS.fetch(sql, params)), None)
        if item is None:
            return None
        claim = _take_slot(project, expert, item, now=now)
        if claim is not None:
            return claim
        stale.append(item.pk)
    raise _Stale


def _reclaim_current(project: Project, expert, *, now: datetime) -> Claim | None:
    with hot_cursor() as cursor:
        cursor.execute(
            f"SELECT item_id FROM {_ASSIGNMENT} WHERE project_id = %s AND expert_id = %s"
            " AND state = 'leased'",
            [project.pk, expert.pk],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    item = _lock_item(row[0])
    assignments = _assignments(item.pk)
    mine = next(
        (a for a in assignments if a.expert_id == expert.pk and a.state == AssignmentState.LEASED),
        None,
    )
    if mine is None:  # taken over between the two reads
        return None
    mine.expires_at = now + timedelta(seconds=project.lease_seconds)
    _save_and_sync(mine, item, project.overlap, assignments=assignments, now=now)
    item.project = project
    return Claim(item=item, assignment=mine)


def _take_slot(project: Project, expert, item: Item, *, now: datetime) -> Claim | None:
    """Authoritative check and write, holding the item's row lock. None if the candidate was
    stale (a racing claim filled it first)."""
    k = project.overlap
    rows = _assignments(item.pk)
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
        _save_assignment(lapsed, now=now)  # its own statement: frees the slot number first
    # The expert's own lapsed lease elsewhere in the project was handled by _reclaim_current;
    # a released row of theirs on this item is reused (unique per item and expert).
    mine = next((a for a in rows if a.expert_id == expert.pk), None)
    if mine is None:
        mine = Assignment(project_id=project.pk, item_id=item.pk, expert_id=expert.pk)
        rows.append(mine)
    mine.state, mine.slot = AssignmentState.LEASED, slot
    mine.leased_at, mine.expires_at = now, now + timedelta(seconds=project.lease_seconds)
    _save_and_sync(mine, item, k, assignments=rows, now=now)
    item.project = project
    return Claim(item=item, assignment=mine)


def _mine(assignments: list[Assignment], expert) -> Assignment | None:
    return next((a for a in assignments if a.expert_id == expert.pk), None)


_LOST = "You no longer hold this item: it was released or given to someone else."


@transaction.atomic
def queue_lease_renew(*, item: Item, expert, now: datetime | None = None) -> Assignment:
    """Extend the expert's lease on ``item`` by the project's lease length.

    A lapsed lease that nobody took over is renewed too (the place was still the expert's).
    Raises ``LeaseLost`` when the expert holds no lease on the item.
    """
    now = now or timezone.now()
    item = _lock_item(item.pk)
    project = Project.objects.get(pk=item.project_id)
    assignments = _assignments(item.pk)
    assignment = _mine(assignments, expert)
    if assignment is None or assignment.state not in HOLDING:
        raise LeaseLost(_LOST)
    if assignment.state != AssignmentState.LEASED:
        raise LeaseLost("You already decided this item.")
    assignment.expires_at = now + timedelta(seconds=project.lease_seconds)
    _save_assignment(assignment, now=now)
    _sync_item(item, project.overlap, assignments=assignments)
    return assignment


@transaction.atomic
def queue_lease_release(*, item: Item, expert, now: datetime | None = None) -> bool:
    """Give the item back to the pool. False when the expert held no lease on it."""
    now = now or timezone.now()
    item = _lock_item(item.pk)
    assignments = _assignments(item.pk)
    assignment = _mine(assignments, expert)
    if assignment is None or assignment.state != AssignmentState.LEASED:
        return False
    assignment.state, assignment.slot = AssignmentState.RELEASED, None
    _save_assignment(assignment, now=now)
    _sync_item(item, _overlap(item.project_id), assignments=assignments)
    return True


def queue_record_decision(
    *, item: Item, expert, counted: bool, now: datetime | None = None, k: int | None = None
) -> Item:
    """Turn the expert's lease into a decision; for the feedback app's review services.

    Call inside ``transaction.atomic``; locks the item row. ``counted`` is False for a skip:
    the place goes back to the pool and the item is never offered to this expert again.
    A lapsed lease still counts if nobody took its place over. Raises ``LeaseLost`` when the
    place is gone and ``ItemFull`` when the item meanwhile got all its decisions.
    Returns the item, with its status and counts updated, and ``item.decision_recorded``
    False when the expert had already decided it (a retry: nothing was changed). ``k`` saves
    a query when the caller knows the project's overlap.
    """
    now = now or timezone.now()
    item = _lock_item(item.pk)
    k = k or _overlap(item.project_id)
    assignments = _assignments(item.pk)
    assignment = _mine(assignments, expert)
    if assignment is None or assignment.state == AssignmentState.RELEASED:
        if item.review_count >= k:
            raise ItemFull("This item already has all the reviews it needs.")
        raise LeaseLost(_LOST)
    item.decision_recorded = assignment.state == AssignmentState.LEASED
    if not item.decision_recorded:
        return item  # already decided: the caller's idempotency handles the rest
    if counted:
        assignment.state = AssignmentState.SUBMITTED
    else:
        assignment.state, assignment.slot = AssignmentState.SKIPPED, None
    _save_and_sync(assignment, item, k, assignments=assignments, now=now)
    return item


@transaction.atomic
def item_refresh_status(*, item: Item) -> Item:
    """Recompute an item's counts and status from its assignments, under its row lock."""
    item = _lock_item(item.pk)
    _sync_item(item, _overlap(item.project_id), assignments=_assignments(item.pk))
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
    # Found through the assignments' expires_at index, not a scan of every item.
    lapsed_items = (
        Assignment.objects.filter(state=AssignmentState.LEASED, expires_at__lte=now - older_than)
        .order_by("expires_at")
        .values_list("item_id", flat=True)
        .distinct()[:limit]
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
            _sync_item(item, _overlap(item.project_id), assignments=_assignments(item.pk))
    return released


def queue_claim_item(*, item: Item, expert, now: datetime | None = None) -> Assignment | None:
    """Lease one given item to ``expert``, for decisions made outside Redline's queue (Label
    Studio annotations taken in by ``feedback.labelstudio``), so they go through
    ``review_submit`` like any other.

    Call inside ``transaction.atomic`` (the caller submits the review in the same
    transaction, so the place cannot be taken in between); locks the item row. Returns the
    expert's live lease on the item (an existing one is kept), or None when the item has no
    free place (it has all its reviews, or k live leases), or when the expert already decided
    or skipped it. Raises ``IntegrityError`` when the expert holds a lease on another item of
    the project (one lease per expert and project).
    """
    now = now or timezone.now()
    locked = _lock_item(item.pk)
    project = Project.objects.get(pk=locked.project_id)
    mine = _mine(_assignments(locked.pk), expert)
    if mine is not None and mine.state == AssignmentState.LEASED:
        return mine
    claim = _take_slot(project, expert, locked, now=now)
    return claim.assignment if claim is not None else None
