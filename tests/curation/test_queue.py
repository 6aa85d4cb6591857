"""The queue under real concurrency on PostgreSQL: distinct claims, never more than k holders."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from curation.models import Assignment, Item, ItemStatus
from curation.services.queue import (
    ItemFull,
    LeaseLost,
    item_refresh_status,
    queue_claim_next,
    queue_lease_release,
    queue_lease_renew,
    queue_record_decision,
    queue_sweep_lapsed,
)
from tests.factories import ProjectFactory, UserFactory, membership_add


def make_items(project, n, *, priority=0):
    now = timezone.now()
    items = [
        Item(
            project=project,
            external_id=f"q-{priority}-{i}",
            prompt=f"question {i}",
            priority=priority,
            source="test",
            created_at=now,
        )
        for i in range(n)
    ]
    return Item.objects.bulk_create(items)


def make_experts(project, n):
    experts = [UserFactory(username=f"qexpert{i}") for i in range(n)]
    for e in experts:
        membership_add(project, e, "expert")
    return experts


def over_k(project):
    """Items with more live leases + decisions than k, checked in SQL."""
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT item_id, count(*) FROM curation_assignment
            WHERE project_id = %s AND (state = 'submitted' OR (state = 'leased' AND expires_at > now()))
            GROUP BY item_id HAVING count(*) > %s
            """,
            [project.pk, project.overlap],
        )
        return cur.fetchall()


# ---- single-threaded rules -----------------------------------------------------------------


@pytest.mark.django_db
def test_claim_follows_priority_then_age_and_returns_my_current_lease():
    project = ProjectFactory()
    (expert,) = make_experts(project, 1)
    low = make_items(project, 2, priority=0)
    high = make_items(project, 1, priority=5)
    first = queue_claim_next(project=project, expert=expert)
    assert first.item.pk == high[0].pk
    assert first.expires_at > timezone.now() + timedelta(seconds=project.lease_seconds - 5)
    again = queue_claim_next(project=project, expert=expert)
    assert again.item.pk == high[0].pk  # my live lease comes back, nothing new is taken
    queue_record_decision(item=first.item, expert=expert, counted=True)
    assert queue_claim_next(project=project, expert=expert).item.pk == low[0].pk


@pytest.mark.django_db
def test_item_completes_after_k_counted_decisions_and_skips_free_the_place():
    project = ProjectFactory()
    project.overlap = 2
    project.save()
    a, b, c = make_experts(project, 3)
    (item,) = make_items(project, 1)
    queue_claim_next(project=project, expert=a)
    queue_claim_next(project=project, expert=b)
    assert queue_claim_next(project=project, expert=c) is None  # both places taken
    queue_record_decision(item=item, expert=b, counted=False)  # b skips
    assert queue_claim_next(project=project, expert=b) is None  # never offered again
    assert queue_claim_next(project=project, expert=c).item.pk == item.pk
    queue_record_decision(item=item, expert=a, counted=True)
    item = queue_record_decision(item=item, expert=c, counted=True)
    assert (item.status, item.review_count, item.held_slots) == (ItemStatus.COMPLETE, 2, 2)
    assert queue_claim_next(project=project, expert=a) is None


@pytest.mark.django_db
def test_a_lapsed_lease_returns_the_item_to_others_and_its_holder_loses_it():
    project = ProjectFactory()
    a, b = make_experts(project, 2)
    (item,) = make_items(project, 1)
    t0 = timezone.now()
    queue_claim_next(project=project, expert=a, now=t0)
    assert queue_claim_next(project=project, expert=b, now=t0) is None
    later = t0 + timedelta(seconds=project.lease_seconds + 1)
    taken = queue_claim_next(project=project, expert=b, now=later)
    assert taken.item.pk == item.pk
    with pytest.raises(LeaseLost):
        queue_lease_renew(item=item, expert=a, now=later)
    with pytest.raises(LeaseLost):
        queue_record_decision(item=item, expert=a, counted=True, now=later)
    queue_record_decision(item=item, expert=b, counted=True, now=later)
    with pytest.raises(ItemFull):
        queue_record_decision(item=item, expert=a, counted=True, now=later)
    assert over_k(project) == []


@pytest.mark.django_db
def test_a_lapsed_lease_nobody_took_is_renewed_for_its_holder():
    project = ProjectFactory()
    (a,) = make_experts(project, 1)
    make_items(project, 3)
    t0 = timezone.now()
    first = queue_claim_next(project=project, expert=a, now=t0)
    later = t0 + timedelta(hours=1)
    again = queue_claim_next(project=project, expert=a, now=later)
    assert again.item.pk == first.item.pk
    assert again.expires_at == later + timedelta(seconds=project.lease_seconds)


@pytest.mark.django_db
def test_renew_extends_and_release_gives_the_item_back():
    project = ProjectFactory()
    a, b = make_experts(project, 2)
    (item,) = make_items(project, 1)
    t0 = timezone.now()
    queue_claim_next(project=project, expert=a, now=t0)
    renewed = queue_lease_renew(item=item, expert=a, now=t0 + timedelta(minutes=5))
    assert renewed.expires_at == t0 + timedelta(minutes=5, seconds=project.lease_seconds)
    assert queue_lease_release(item=item, expert=a) is True
    assert queue_lease_release(item=item, expert=a) is False
    assert queue_claim_next(project=project, expert=b).item.pk == item.pk
    with pytest.raises(LeaseLost):
        queue_lease_renew(item=item, expert=a)


@pytest.mark.django_db
def test_sweep_releases_lapsed_leases_and_refresh_recomputes_counts():
    project = ProjectFactory()
    a, b = make_experts(project, 2)
    items = make_items(project, 2)
    past = timezone.now() - timedelta(hours=2)
    queue_claim_next(project=project, expert=a, now=past)
    assert queue_sweep_lapsed() == 1
    assert Assignment.objects.get(expert=a).state == "released"
    assert queue_claim_next(project=project, expert=b).item.pk == items[0].pk
    held = dict(Item.objects.filter(project=project).values_list("pk", "held_slots"))
    assert held == {items[0].pk: 1, items[1].pk: 0}
    Item.objects.filter(pk=items[0].pk).update(held_slots=0)  # corrupt, then repair
    assert item_refresh_status(item=items[0]).held_slots == 1


@pytest.mark.django_db
def test_claim_query_uses_the_partial_queue_index():
    from curation.services.queue import claim_candidate_sql

    project = ProjectFactory()
    (a,) = make_experts(project, 1)
    make_items(project, 50)
    with connection.cursor() as cur:
        cur.execute("SET enable_seqscan = off")  # tiny table: make the planner show its index
        sql, params = claim_candidate_sql(project, a, now=timezone.now())
        cur.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
        cur.execute("RESET enable_seqscan")
    assert "item_queue_open" in plan


# ---- real threads on PostgreSQL -------------------------------------------------------------


def _run_experts(project, experts, *, skip_every=0):
    """Each expert thread claims and decides until nothing is left. Returns (claims, errors)."""
    claims: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(experts))

    def work(expert, index):
        try:
            start.wait()
            n = 0
            while True:
                claim = queue_claim_next(project=project, expert=expert)
                if claim is None:
                    return
                with lock:
                    claims.append((claim.item.pk, expert.pk))
                n += 1
                counted = not (skip_every and n % skip_every == 0)
                from django.db import transaction

                with transaction.atomic():
                    queue_record_decision(item=claim.item, expert=expert, counted=counted)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(e, i)) for i, e in enumerate(experts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    return claims, errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("k", [1, 3])
def test_32_threads_claim_distinct_items_within_k_and_finish_the_queue(k):
    project = ProjectFactory()
    project.overlap = k
    project.save()
    experts = make_experts(project, 32)
    items = make_items(project, 120)
    claims, errors = _run_experts(project, experts)
    assert errors == []
    # an expert never gets an item twice; no item is handed to more experts than k
    assert len(set(claims)) == len(claims)
    per_item = Counter(item for item, _ in claims)
    assert max(per_item.values()) == k
    # every item was handed out and completed with exactly k decisions
    assert set(per_item) == {i.pk for i in items}
    assert len(claims) == 120 * k
    statuses = Counter(Item.objects.filter(project=project).values_list("status", "review_count"))
    assert statuses == {(ItemStatus.COMPLETE, k): 120}
    assert over_k(project) == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_with_skips_never_exceed_k_and_skippers_never_see_it_again():
    project = ProjectFactory()
    project.overlap = 2
    project.save()
    experts = make_experts(project, 16)
    make_items(project, 40)
    claims, errors = _run_experts(project, experts, skip_every=3)
    # A thread stops at its first "nothing left", while a skip elsewhere may free a place
    # later: run rounds until one hands out nothing.
    while True:
        more, more_errors = _run_experts(project, experts, skip_every=3)
        claims += more
        errors += more_errors
        if not more:
            break
    assert errors == []
    assert len(set(claims)) == len(claims)
    by_item = defaultdict(set)
    for item, expert in claims:
        by_item[item].add(expert)
    rows = Assignment.objects.filter(project=project)
    assert rows.filter(state="leased").count() == 0
    submitted = Counter(rows.filter(state="submitted").values_list("item_id", flat=True))
    assert max(submitted.values()) == 2
    for item_id in Item.objects.filter(project=project).values_list("pk", flat=True):
        if submitted[item_id] < 2:  # only when every expert already decided or skipped it
            assert rows.filter(item_id=item_id).exclude(state="released").count() == 16
    assert over_k(project) == []


@pytest.mark.django_db(transaction=True)
def test_same_expert_claiming_twice_at_once_holds_one_lease():
    project = ProjectFactory()
    (expert,) = make_experts(project, 1)
    make_items(project, 10)
    results = []
    barrier = threading.Barrier(8)

    def claim():
        try:
            barrier.wait()
            results.append(queue_claim_next(project=project, expert=expert).item.pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 8 and len(set(results)) == 1
    assert Assignment.objects.filter(expert=expert, state="leased").count() == 1
