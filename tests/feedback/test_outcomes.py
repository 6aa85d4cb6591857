"""Outcomes from k reviews, adjudication, gold scoring and agreement figures."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from curation.services.settings import project_settings_update
from feedback.models import AuditEvent, ItemOutcome
from feedback.selectors import agreement_report, expert_table
from feedback.services import gold_set, item_adjudicate
from tests.factories import UserFactory, item_add, membership_add

pytestmark = pytest.mark.django_db


@pytest.fixture
def experts(project):
    users = [UserFactory(username=f"exp{i}") for i in range(3)]
    for user in users:
        membership_add(project, user, "expert")
    return users


@pytest.fixture
def manager(project):
    user = UserFactory(username="boss")
    membership_add(project, user, "manager")
    return user


def _outcome(item):
    return ItemOutcome.objects.get(item=item)


def test_k_agreeing_accepts_make_an_accepted_outcome_with_the_original_text(
    project, experts, decide
):
    project_settings_update(project=project, overlap=2)
    item = item_add(project, candidates=[("Paris.", "m")])
    decide(project, experts[0], "accept")
    assert not ItemOutcome.objects.exists()  # one of two reviews: undecided
    decide(project, experts[1], "accept")
    outcome = _outcome(item)
    assert (outcome.outcome, outcome.source, outcome.agreement) == ("accepted", "unanimous", 1.0)
    assert outcome.final_text == "Paris." and outcome.review_count == 2


def test_one_correction_among_accepts_becomes_the_final_text(project, experts, decide):
    project_settings_update(project=project, overlap=2)
    item = item_add(project, candidates=[("Paris.", "m")])
    decide(project, experts[0], "correct", corrected_output="Paris, France.")
    decide(project, experts[1], "accept")
    assert _outcome(item).final_text == "Paris, France."


def test_two_different_corrections_need_adjudication(project, experts, decide):
    project_settings_update(project=project, overlap=2)
    item = item_add(project, candidates=[("Paris.", "m")])
    decide(project, experts[0], "correct", corrected_output="Paris, France.")
    decide(project, experts[1], "correct", corrected_output="It is Paris.")
    assert _outcome(item).outcome == "needs_adjudication"


def test_disagreement_needs_adjudication_under_unanimity_and_majority_decides_otherwise(
    project, experts, decide
):
    project_settings_update(project=project, overlap=3)
    item = item_add(project, candidates=[("Paris.", "m")])
    decide(project, experts[0], "accept")
    decide(project, experts[1], "reject")
    decide(project, experts[2], "reject")
    outcome = _outcome(item)
    assert outcome.outcome == "needs_adjudication"
    assert outcome.agreement == pytest.approx(2 / 3)
    project_settings_update(project=project, outcome_rule="majority")
    outcome = _outcome(item)
    assert (outcome.outcome, outcome.source) == ("rejected", "majority")
    assert outcome.final_text == ""


def test_a_compare_outcome_follows_the_preference(project, experts, decide):
    project_settings_update(project=project, overlap=2, review_modes=["correct", "compare"])
    item = item_add(project, candidates=[("A", "m1"), ("B", "m2")])
    a, b = item.candidates.order_by("position")
    decide(project, experts[0], "accept", preferred_candidate=b.pk)
    decide(project, experts[1], "accept", preferred_candidate=b.pk)
    outcome = _outcome(item)
    assert outcome.preferred_candidate_id == b.pk and outcome.final_text == "B"
    assert outcome.outcome == "accepted"


def test_raising_k_withdraws_an_outcome_until_the_new_reviews_arrive(project, experts, decide):
    item = item_add(project)
    decide(project, experts[0], "accept")
    assert _outcome(item).outcome == "accepted"
    project_settings_update(project=project, overlap=2)
    assert not ItemOutcome.objects.filter(item=item).exists()
    item.refresh_from_db()
    assert item.status == "open"
    decide(project, experts[1], "accept")
    assert _outcome(item).review_count == 2


def test_adjudication_sets_the_final_outcome_and_is_audited(project, experts, manager, decide):
    project_settings_update(project=project, overlap=2)
    item = item_add(project, candidates=[("Paris.", "m")])
    decide(project, experts[0], "correct", corrected_output="Paris, France.")
    decide(project, experts[1], "correct", corrected_output="It is Paris.")
    with pytest.raises(ValidationError) as exc:
        item_adjudicate(item=item, manager=manager, outcome="accepted")
    assert "final_text" in exc.value.message_dict
    with pytest.raises(ValidationError):
        item_adjudicate(item=item, manager=manager, outcome="rejected", final_text="x")
    outcome = item_adjudicate(
        item=item,
        manager=manager,
        outcome="accepted",
        final_text="Paris, France.",
        final_candidate=item.candidates.get().pk,
        note="first is clearer",
    )
    assert (outcome.outcome, outcome.source, outcome.decided_by) == (
        "accepted",
        "adjudicated",
        manager,
    )
    assert outcome.final_text == "Paris, France." and outcome.note == "first is clearer"
    event = AuditEvent.objects.get(action="item.adjudicated")
    assert event.actor == manager and event.details["previous"] == "needs_adjudication"
    # an amendment afterwards does not overturn the manager's decision
    from feedback.services import review_amend

    review = item.reviews.get(expert=experts[1])
    review_amend(review=review, editor=experts[1], verdict="reject", corrected_output="")
    assert _outcome(item).source == "adjudicated"


def test_an_item_without_all_its_reviews_cannot_be_adjudicated(project, experts, manager, decide):
    project_settings_update(project=project, overlap=2)
    item = item_add(project)
    decide(project, experts[0], "accept")
    with pytest.raises(ValidationError) as exc:
        item_adjudicate(item=item, manager=manager, outcome="rejected")
    assert "1 of 2 reviews" in exc.value.message_dict["outcome"][0]


def test_gold_items_score_experts(project, experts, manager, decide):
    good = item_add(project, priority=3, candidates=[("Paris.", "m")])
    bad = item_add(project, priority=2, candidates=[("Lyon.", "m")])
    gold_set(item=good, actor=manager, verdict="accept")
    gold_set(item=bad, actor=manager, verdict="correct")
    project_settings_update(project=project, overlap=2)
    # exp0: accepts both (right on good, wrong on bad); exp1: rejects good, corrects bad
    decide(project, experts[0], "accept")
    decide(project, experts[0], "accept")
    decide(project, experts[1], "reject")
    decide(project, experts[1], "correct", corrected_output="Paris.")
    rows = {row.username: row for row in expert_table(project=project)}
    assert (rows["exp0"].gold_scored, rows["exp0"].gold_correct) == (2, 1)
    assert (rows["exp1"].gold_scored, rows["exp1"].gold_correct) == (2, 1)
    assert rows["exp1"].correction_rate == 0.5 and rows["exp0"].correction_rate == 0.0
    assert rows["exp0"].gold_accuracy == 0.5


def test_gold_needs_a_valid_expected_answer(project, manager):
    item = item_add(project)
    with pytest.raises(ValidationError) as exc:
        gold_set(item=item, actor=manager, verdict="skip")
    assert "verdict" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        gold_set(item=item, actor=manager, verdict="accept", tie=True)
    assert "only one output" in exc.value.message_dict["preferred_candidate"][0]


def test_agreement_on_a_hand_computed_example(project, experts, decide):
    """Two experts, three items: (accept, accept), (accept, reject), (reject, reject).

    Raw agreement: 2 agreeing pairs of 3 = 2/3. Krippendorff's alpha (nominal): the
    coincidence matrix has o(a,a)=2, o(a,r)=o(r,a)=1, o(r,r)=2, n=6, n_a=n_r=3, so
    D_o = 2/6 and D_e = 2·3·3/(6·5) = 18/30; alpha = 1 − (1/3)/(3/5) = 4/9.
    """
    project_settings_update(
        project=project,
        overlap=2,
        review_modes=["correct", "label"],
        label_schema=[
            {"key": "score", "prompt": "Score", "type": "rating", "scale": 3, "required": True}
        ],
    )
    for priority in (3, 2, 1):
        item_add(project, priority=priority)
    plan = [("accept", "accept", 1, 1), ("accept", "reject", 1, 2), ("reject", "reject", 3, 3)]
    for first, second, s1, s2 in plan:
        decide(project, experts[0], first, labels={"score": s1})
        decide(project, experts[1], second, labels={"score": s2})
    report = agreement_report(project=project)
    figures = {(f.key, f.method): f for f in report.figures}
    assert report.items_with_overlap == 3
    assert figures[("verdict", "raw")].value == pytest.approx(2 / 3)
    assert figures[("verdict", "raw")].items == 3
    assert figures[("verdict", "alpha-nominal")].value == pytest.approx(4 / 9)
    assert figures[("preference", "raw")].value is None
    # ordinal alpha for ratings comes from the krippendorff package; perfect agreement on two
    # of three items and a one-step disagreement on the third is well above chance
    score = figures[("score", "alpha-ordinal")]
    assert score.items == 3 and 0.5 < score.value < 1


def test_agreement_with_too_little_data_says_why(project, experts, decide):
    item_add(project)
    decide(project, experts[0], "accept")
    figures = {(f.key, f.method): f for f in agreement_report(project=project).figures}
    assert figures[("verdict", "raw")].value is None
    assert figures[("verdict", "alpha-nominal")].note == "no item has two answers yet"
