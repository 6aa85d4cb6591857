"""review_submit / review_amend: fields, validation, idempotency, revisions and audit."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from curation.models import Assignment, Item
from curation.services.queue import (
    ItemFull,
    LeaseLost,
    queue_claim_next,
    queue_lease_release,
)
from curation.services.settings import guideline_publish, project_settings_update
from feedback.models import AuditEvent, Review, ReviewRevision
from feedback.services import AlreadyDecided, review_amend, review_submit
from tests.factories import UserFactory, item_add, membership_add

pytestmark = pytest.mark.django_db

SCHEMA = [
    {
        "key": "tone",
        "prompt": "Tone?",
        "type": "single_choice",
        "options": ["ok", "rude"],
        "required": True,
    },
    {
        "key": "issues",
        "prompt": "Issues",
        "type": "multiple_choice",
        "options": ["facts", "style", "safety"],
    },
    {"key": "helpful", "prompt": "Helpfulness", "type": "rating", "scale": 4},
    {"key": "note", "prompt": "Note", "type": "text"},
]


@pytest.fixture
def expert(project):
    user = UserFactory(username="erin")
    membership_add(project, user, "expert")
    return user


def _claim(project, expert):
    claim = queue_claim_next(project=project, expert=expert)
    assert claim is not None
    return claim.item


def test_accept_records_the_decision_a_revision_and_an_audit_event(project, expert):
    guideline, _ = guideline_publish(project=project, text="Be precise.", created_by=expert)
    item = item_add(project)
    result = review_submit(
        item=_claim(project, expert),
        expert=expert,
        verdict="accept",
        rationale=" fine ",
        time_spent_ms=4200,
    )
    review = result.review
    assert result.created
    assert review.verdict == "accept"
    assert review.candidate_id == item.candidates.get().pk
    assert review.rationale == "fine"
    assert review.guideline_version_id == guideline.pk
    assert review.time_spent_ms == 4200
    assert review.candidate_order == [item.candidates.get().pk]
    revision = ReviewRevision.objects.get(review=review)
    assert revision.number == 1 and revision.data["verdict"] == "accept"
    event = AuditEvent.objects.get(review=review)
    assert event.action == "review.submitted" and event.actor == expert
    item.refresh_from_db()
    assert item.status == "complete" and item.review_count == 1
    assert Assignment.objects.get(item=item).state == "submitted"


def test_a_correction_needs_changed_text(project, expert):
    item_add(project, candidates=[("Paris.", "m")])
    item = _claim(project, expert)
    with pytest.raises(ValidationError) as exc:
        review_submit(item=item, expert=expert, verdict="correct", corrected_output="Paris.")
    assert "unchanged" in exc.value.message_dict["corrected_output"][0]
    with pytest.raises(ValidationError) as exc:
        review_submit(item=item, expert=expert, verdict="correct", corrected_output="  ")
    assert "corrected_output" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        review_submit(item=item, expert=expert, verdict="accept", corrected_output="Lyon.")
    assert "Only a correction" in exc.value.message_dict["corrected_output"][0]
    assert not Review.objects.exists()
    review = review_submit(
        item=item, expert=expert, verdict="correct", corrected_output="Paris, France."
    ).review
    assert review.corrected_output == "Paris, France."


def test_compare_needs_a_preference_in_compare_mode(project, expert):
    project_settings_update(project=project, review_modes=["correct", "compare"])
    item_add(project, candidates=[("A text", "m1"), ("B text", "m2")])
    item = _claim(project, expert)
    a, b = item.candidates.order_by("position")
    with pytest.raises(ValidationError) as exc:
        review_submit(item=item, expert=expert, verdict="accept")
    assert "preferred_candidate" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        review_submit(
            item=item, expert=expert, verdict="accept", preferred_candidate=a.pk, tie=True
        )
    assert "not both" in exc.value.message_dict["preferred_candidate"][0]
    review = review_submit(
        item=item,
        expert=expert,
        verdict="accept",
        preferred_candidate=b.pk,
        candidate_order=[b.pk, a.pk],
    ).review
    assert review.preferred_candidate_id == b.pk and review.candidate_id == b.pk
    assert review.candidate_order == [b.pk, a.pk]


def test_a_candidate_of_another_item_is_refused(project, expert):
    other = item_add(project)
    item_add(project, priority=5)
    item = _claim(project, expert)
    with pytest.raises(ValidationError) as exc:
        review_submit(
            item=item, expert=expert, verdict="accept", candidate=other.candidates.get().pk
        )
    assert "not one of this item's outputs" in exc.value.message_dict["candidate"][0]


def test_labels_are_validated_against_the_schema_and_errors_name_the_question(project, expert):
    project_settings_update(project=project, review_modes=["correct", "label"], label_schema=SCHEMA)
    item_add(project)
    item = _claim(project, expert)
    with pytest.raises(ValidationError) as exc:
        review_submit(
            item=item,
            expert=expert,
            verdict="accept",
            labels={"issues": ["nope"], "helpful": 9, "typo": "x"},
            rating=7,
        )
    errors = exc.value.message_dict
    assert "required" in errors["labels.tone"][0]
    assert "'nope'" in errors["labels.issues"][0]
    assert "1 to 4" in errors["labels.helpful"][0]
    assert "No question 'typo'" in errors["labels.typo"][0]
    assert "1 to 5" in errors["rating"][0]
    review = review_submit(
        item=item,
        expert=expert,
        verdict="accept",
        rating=4,
        labels={"tone": "ok", "issues": ["style", "facts", "style"], "helpful": "3", "note": "hm"},
    ).review
    assert review.labels == {"tone": "ok", "issues": ["facts", "style"], "helpful": 3, "note": "hm"}
    assert review.rating == 4


def test_a_skip_needs_no_labels_and_frees_the_place(project, expert):
    project_settings_update(project=project, review_modes=["correct", "label"], label_schema=SCHEMA)
    item_add(project)
    item = _claim(project, expert)
    review = review_submit(
        item=item, expert=expert, verdict="skip", rationale="not my field"
    ).review
    assert review.verdict == "skip" and review.labels == {}
    item.refresh_from_db()
    assert item.status == "open" and item.review_count == 0 and item.held_slots == 0
    # never offered to this expert again, but to others
    assert queue_claim_next(project=project, expert=expert) is None
    other = UserFactory()
    membership_add(project, other, "expert")
    assert queue_claim_next(project=project, expert=other).item.pk == item.pk


def test_double_submit_with_one_key_makes_one_review(project, expert):
    item_add(project)
    item = _claim(project, expert)
    first = review_submit(item=item, expert=expert, verdict="accept", idempotency_key="k-1")
    again = review_submit(item=item, expert=expert, verdict="accept", idempotency_key="k-1")
    assert first.created and not again.created
    assert again.review.pk == first.review.pk
    assert Review.objects.count() == 1 and ReviewRevision.objects.count() == 1
    assert AuditEvent.objects.count() == 1


def test_a_second_decision_under_another_key_is_refused(project, expert):
    item_add(project)
    item = _claim(project, expert)
    first = review_submit(item=item, expert=expert, verdict="accept", idempotency_key="k-1")
    with pytest.raises(AlreadyDecided) as exc:
        review_submit(item=item, expert=expert, verdict="reject", idempotency_key="k-2")
    assert exc.value.review.pk == first.review.pk
    assert Review.objects.get().verdict == "accept"


def test_a_key_reused_on_another_item_is_refused(project, expert):
    item_add(project, priority=2)
    item_add(project, priority=1)
    review_submit(
        item=_claim(project, expert), expert=expert, verdict="accept", idempotency_key="same"
    )
    with pytest.raises(ValidationError) as exc:
        review_submit(
            item=_claim(project, expert), expert=expert, verdict="accept", idempotency_key="same"
        )
    assert "another item" in exc.value.message_dict["idempotency_key"][0]


def test_submitting_without_the_lease_fails_and_writes_nothing(project, expert):
    item_add(project)
    item = _claim(project, expert)
    queue_lease_release(item=item, expert=expert)
    with pytest.raises(LeaseLost):
        review_submit(item=item, expert=expert, verdict="accept")
    assert not Review.objects.exists() and not AuditEvent.objects.exists()


def test_submitting_on_an_item_that_filled_meanwhile_says_so(project, expert):
    item_add(project)
    item = _claim(project, expert)
    queue_lease_release(item=item, expert=expert)
    other = UserFactory()
    membership_add(project, other, "expert")
    review_submit(item=_claim(project, other), expert=other, verdict="accept")
    with pytest.raises(ItemFull):
        review_submit(item=item, expert=expert, verdict="accept")
    assert Review.objects.count() == 1


def test_amendments_keep_every_revision(project, expert):
    item_add(project, candidates=[("Paris.", "m")])
    review = review_submit(item=_claim(project, expert), expert=expert, verdict="accept").review
    review = review_amend(
        review=review, editor=expert, verdict="correct", corrected_output="Paris, France."
    )
    review = review_amend(review=review, editor=expert, rationale="checked the atlas")
    same = review_amend(review=review, editor=expert, rationale="checked the atlas")
    assert same.revision == 3  # nothing changed: no new revision
    revisions = list(ReviewRevision.objects.filter(review=review).order_by("number"))
    assert [r.number for r in revisions] == [1, 2, 3]
    assert revisions[0].data["verdict"] == "accept"
    assert revisions[1].changed == ["verdict", "corrected_output"]
    assert revisions[2].changed == ["rationale"]
    assert revisions[2].data["corrected_output"] == "Paris, France."
    # amending back to accept drops the correction
    review = review_amend(review=review, editor=expert, verdict="accept")
    assert review.corrected_output == "" and review.revision == 4
    assert AuditEvent.objects.filter(action="review.amended").count() == 3
    assert review.item.outcome.final_text == "Paris."


def test_only_the_author_amends_and_skips_stay_skips(project, expert):
    item_add(project, priority=2)
    item_add(project, priority=1)
    review = review_submit(item=_claim(project, expert), expert=expert, verdict="accept").review
    other = UserFactory()
    with pytest.raises(PermissionDenied):
        review_amend(review=review, editor=other, verdict="reject")
    with pytest.raises(ValidationError):
        review_amend(review=review, editor=expert, verdict="skip")
    skipped = review_submit(item=_claim(project, expert), expert=expert, verdict="skip").review
    with pytest.raises(ValidationError):
        review_amend(review=skipped, editor=expert, verdict="accept")
    assert Item.objects.filter(status="complete").count() == 1
