"""Submitting under real concurrency on PostgreSQL: one review per retry, never more than k."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from curation.models import Assignment, Item
from curation.services.queue import ItemFull, LeaseLost, queue_claim_next
from feedback.models import AuditEvent, ItemOutcome, Review, ReviewRevision
from feedback.services import review_submit
from tests.factories import ProjectFactory, UserFactory, item_add, membership_add


def _together(fns):
    """Run the callables in threads released at once; returns (results, errors)."""
    barrier = threading.Barrier(len(fns))
    results, errors = [], []

    def run(fn):
        try:
            barrier.wait()
            results.append(fn())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results, errors


@pytest.mark.django_db(transaction=True)
def test_eight_simultaneous_retries_of_one_submit_make_one_review():
    project = ProjectFactory()
    expert = UserFactory()
    membership_add(project, expert, "expert")
    item_add(project)
    item = queue_claim_next(project=project, expert=expert).item

    def submit():
        return review_submit(item=item, expert=expert, verdict="accept", idempotency_key="retry")

    results, errors = _together([submit] * 8)
    assert errors == []
    assert sum(r.created for r in results) == 1
    assert len({r.review.pk for r in results}) == 1
    assert Review.objects.count() == 1
    assert ReviewRevision.objects.count() == 1
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_experts_racing_for_the_last_place_leave_exactly_k_reviews():
    """k=2: one review exists; A's lease on the last place lapsed and B took it over. Both
    submit at the same moment: exactly one decision lands and the item has exactly k."""
    project = ProjectFactory()
    project.overlap = 2
    project.save()
    first, a, b = (UserFactory() for _ in range(3))
    for user in (first, a, b):
        membership_add(project, user, "expert")
    item_add(project)
    review_submit(
        item=queue_claim_next(project=project, expert=first).item, expert=first, verdict="accept"
    )
    past = timezone.now() - timedelta(hours=1)
    claim_a = queue_claim_next(project=project, expert=a, now=past)  # lapsed long ago
    claim_b = queue_claim_next(project=project, expert=b)  # takes A's place over
    assert claim_a.item.pk == claim_b.item.pk

    results, errors = _together(
        [
            lambda: review_submit(item=claim_a.item, expert=a, verdict="reject"),
            lambda: review_submit(item=claim_b.item, expert=b, verdict="accept"),
        ]
    )
    assert len(results) == 1 and len(errors) == 1
    assert isinstance(errors[0], LeaseLost | ItemFull)
    item = Item.objects.get()
    assert item.review_count == 2 and item.status == "complete"
    assert Review.objects.filter(item=item).count() == 2
    assert set(Review.objects.values_list("expert_id", flat=True)) == {first.pk, b.pk}
    assert Assignment.objects.filter(item=item, state="submitted").count() == 2
    assert ItemOutcome.objects.get(item=item).review_count == 2


@pytest.mark.django_db(transaction=True)
def test_sixteen_experts_working_a_queue_never_put_more_than_k_reviews_on_an_item():
    project = ProjectFactory()
    project.overlap = 3
    project.save()
    experts = [UserFactory() for _ in range(16)]
    for e in experts:
        membership_add(project, e, "expert")
    for i in range(30):
        item_add(project, external_id=f"c-{i}")

    def work(expert):
        def run():
            done = 0
            while (claim := queue_claim_next(project=project, expert=expert)) is not None:
                verdict = "skip" if (claim.item.pk + expert.pk) % 5 == 0 else "accept"
                review_submit(item=claim.item, expert=expert, verdict=verdict)
                done += 1
            return done

        return run

    results, errors = _together([work(e) for e in experts])
    assert errors == []
    from django.db.models import Count, Q

    counts = Item.objects.annotate(
        n=Count("reviews", filter=~Q(reviews__verdict="skip"))
    ).values_list("n", "review_count", "status")
    for n, review_count, status in counts:
        assert n == review_count <= 3
        assert status == ("complete" if n == 3 else "open")
    assert ItemOutcome.objects.count() == Item.objects.filter(status="complete").count()
