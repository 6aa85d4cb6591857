"""The expert review page: claim and show, submit every kind of decision and get the next item
as a fragment, idempotent submits, drafts kept on errors and lost items, lease renewal,
amendments with history, and the persona matrix on every endpoint."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from curation.models import Assignment, Candidate
from curation.services.queue import queue_claim_next
from curation.services.settings import guideline_publish, project_settings_update
from feedback.models import Review, ReviewRevision
from feedback.selectors import candidate_order_for
from feedback.services import review_submit
from tests.factories import UserFactory, item_add, membership_add

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'


# ---- helpers ------------------------------------------------------------------------------


def review_url(project):
    return reverse("feedback:review", args=[project.slug])


def submit_url(project, item_id):
    return reverse("feedback:review_submit", args=[project.slug, item_id])


def renew_url(project, item_id):
    return reverse("feedback:review_renew", args=[project.slug, item_id])


def decision_url(project, review_id):
    return reverse("feedback:review_decision", args=[project.slug, review_id])


def hidden(page: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', page)
    assert match, f"no hidden field {name}"
    return html.unescape(match.group(1))


def item_id_of(page: str) -> int:
    match = re.search(r'id="review"[^>]*data-item-id="(\d+)"', page)
    assert match, "no item on the page"
    return int(match.group(1))


def shown(client, project, **extra) -> tuple[int, dict]:
    """GET the review page; return the item id and the form's hidden fields."""
    page = client.get(review_url(project), **extra).content.decode()
    return item_id_of(page), form_fields(page)


def form_fields(page: str) -> dict:
    return {
        name: hidden(page, name)
        for name in ("candidate_order", "guideline_version", "idempotency_key")
    }


def submit(client, project, item_id, fields, action, **data):
    body = {**fields, "action": action, "time_spent_ms": "1234", **data}
    return client.post(submit_url(project, item_id), body, **HX)


@pytest.fixture
def expert(personas):
    return personas["expert"]


@pytest.fixture
def items(project):
    """Three single-output items in a known order (highest priority first)."""
    return [
        item_add(project, external_id=f"item-{n}", prompt=f"Question {n}?", priority=10 - n,
                 candidates=[(f"Answer {n} is here.", "base")])
        for n in range(1, 4)
    ]  # fmt: skip


@pytest.fixture
def compare_project(project):
    project_settings_update(project=project, review_modes=["correct", "compare"])
    project.refresh_from_db()
    return project


# ---- showing an item ------------------------------------------------------------------------


def test_get_claims_the_next_item_and_shows_it(personas, project, items, client_for):
    guideline_publish(project=project, text="# Be **kind**", created_by=personas["manager"])
    c = client_for(personas["expert"])
    response = c.get(review_url(project))
    page = response.content.decode()
    assert response.status_code == 200
    assert item_id_of(page) == items[0].pk
    assert "Question 1?" in page and "Answer 1 is here." in page
    assert Assignment.objects.get(expert=personas["expert"]).item_id == items[0].pk
    assert "<h1>Be <strong>kind</strong></h1>" in page  # the guidelines, rendered safely
    assert hidden(page, "guideline_version") == str(project.guidelines.get().pk)
    assert "Accept <kbd>a</kbd>" in page and "Correct <kbd>e</kbd>" in page
    assert "Skip <kbd>s</kbd>" in page and "Reject <kbd>r</kbd>" in page
    assert "css/review.css" in page and "js/review.js" in page
    assert response["Vary"] and "HX-Request" in response["Vary"]


def test_an_expert_who_holds_a_lease_gets_the_same_item_back(personas, project, items, client_for):
    c = client_for(personas["expert"])
    first, _ = shown(c, project)
    again, _ = shown(c, project)
    assert first == again == items[0].pk
    assert Assignment.objects.filter(expert=personas["expert"]).count() == 1


def test_chat_messages_render_as_a_conversation_with_roles(personas, project, client_for):
    item_add(
        project,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
    )
    page = client_for(personas["expert"]).get(review_url(project)).content.decode()
    assert 'class="conversation"' in page
    assert '<span class="turn-role">system</span>' in page
    assert '<span class="turn-role">user</span>' in page and "Capital of France?" in page


def test_label_questions_render_by_type(personas, project, items, client_for):
    project_settings_update(
        project=project,
        label_schema=[
            {"key": "tone", "prompt": "Tone?", "type": "single_choice", "options": ["ok", "rude"]},
            {"key": "tags", "prompt": "Tags?", "type": "multiple_choice", "options": ["x", "y"]},
            {"key": "clarity", "prompt": "Clarity?", "type": "rating", "scale": 3},
            {"key": "note", "prompt": "Note?", "type": "text"},
        ],
    )
    page = client_for(personas["expert"]).get(review_url(project)).content.decode()
    assert page.count('type="radio" name="label-tone"') == 2
    assert page.count('type="checkbox" name="label-tags"') == 2
    assert page.count('type="radio" name="label-clarity"') == 3
    assert 'type="text" id="q-note" name="label-note"' in page
    assert page.count('type="radio" name="rating"') == 6  # none + 1..5


def test_nothing_left_shows_a_friendly_panel_with_a_link_to_the_queue(
    personas, project, client_for
):
    page = client_for(personas["expert"]).get(review_url(project)).content.decode()
    assert "Nothing left for you here" in page
    assert reverse("curation:queue", args=[project.slug]) in page


def test_htmx_get_answers_the_fragment_alone(personas, project, items, client_for):
    response = client_for(personas["expert"]).get(review_url(project), **HX)
    page = response.content.decode()
    assert page.lstrip().startswith('<section id="review"')
    assert "<html" not in page and "topbar" not in page
    assert 'hx-swap-oob="true"' in page  # the guidelines panel, out of band
    assert "HX-Request" in response["Vary"]


def test_two_candidates_are_shown_in_the_experts_order_with_compare_keys(
    personas, compare_project, client_for
):
    item = item_add(compare_project, candidates=[("First.", "m1"), ("Second.", "m2")])
    expert = personas["expert"]
    page = client_for(expert).get(review_url(compare_project)).content.decode()
    ids = [c.pk for c in item.candidates.order_by("position")]
    order = candidate_order_for(item_id=item.pk, expert_id=expert.pk, candidate_ids=ids)
    assert hidden(page, "candidate_order") == ",".join(map(str, order))
    assert f'value="prefer-{order[0]}"' in page and "A better <kbd>1</kbd>" in page
    assert f'value="prefer-{order[1]}"' in page and "B better <kbd>2</kbd>" in page
    assert "Tie <kbd>3</kbd>" in page
    assert page.index(f'id="output-{order[0]}"') < page.index(f'id="output-{order[1]}"')
    assert "m1" not in page and "m2" not in page  # blind: model names hidden when comparing


# ---- submitting -----------------------------------------------------------------------------


def test_accept_stores_the_review_and_answers_the_next_items_fragment(
    personas, project, items, client_for
):
    guideline_publish(project=project, text="v1", created_by=personas["manager"])
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    response = submit(c, project, item_id, fields, "accept", rating="4", rationale="Fine.")
    page = response.content.decode()
    assert response.status_code == 200
    assert page.lstrip().startswith('<section id="review"') and "<html" not in page
    assert item_id_of(page) == items[1].pk
    assert f'data-decided="{items[0].pk}"' in page
    assert "Held for you until" in page
    assert "hx-swap-oob" not in page  # same guideline version: not re-sent
    review = Review.objects.get()
    assert review.verdict == "accept" and review.item_id == items[0].pk
    assert review.candidate_id == items[0].candidates.get().pk
    assert review.rating == 4 and review.rationale == "Fine."
    assert review.time_spent_ms == 1234
    assert review.guideline_version_id == int(fields["guideline_version"])
    assert review.idempotency_key == fields["idempotency_key"]
    assert len(response.content) < 100_000


def test_correct_stores_the_corrected_output(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    candidate = items[0].candidates.get()
    submit(
        c, project, item_id, fields, "correct",
        corrected_output="Answer 1 is really here.", correct_candidate=str(candidate.pk),
    )  # fmt: skip
    review = Review.objects.get()
    assert review.verdict == "correct" and review.candidate_id == candidate.pk
    assert review.corrected_output == "Answer 1 is really here."


def test_corrected_text_is_ignored_for_other_verdicts(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept", corrected_output="left in the box")
    assert Review.objects.get().corrected_output == ""


def test_reject_keeps_the_reason_and_skip_frees_the_item(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "reject", rationale="Wrong capital.")
    item_id, fields = shown(c, project)
    response = submit(c, project, item_id, fields, "skip")
    assert item_id_of(response.content.decode()) == items[2].pk
    reject, skip = Review.objects.order_by("created_at", "id")
    assert (reject.verdict, reject.rationale) == ("reject", "Wrong capital.")
    assert skip.verdict == "skip" and skip.item_id == items[1].pk
    assert Assignment.objects.get(item=items[1]).state == "skipped"


@pytest.mark.parametrize("pick", [0, 1])
def test_a_better_or_b_better_records_the_preference_and_the_order(
    personas, compare_project, client_for, pick
):
    item = item_add(compare_project, candidates=[("First.", "m1"), ("Second.", "m2")])
    c = client_for(personas["expert"])
    item_id, fields = shown(c, compare_project)
    order = [int(x) for x in fields["candidate_order"].split(",")]
    submit(c, compare_project, item_id, fields, f"prefer-{order[pick]}")
    review = Review.objects.get(item=item)
    assert review.verdict == "accept" and not review.tie
    assert review.preferred_candidate_id == order[pick] == review.candidate_id
    assert review.candidate_order == order


def test_tie_records_a_tie(personas, compare_project, client_for):
    item_add(compare_project, candidates=[("First.", "m1"), ("Second.", "m2")])
    c = client_for(personas["expert"])
    item_id, fields = shown(c, compare_project)
    submit(c, compare_project, item_id, fields, "tie")
    review = Review.objects.get()
    assert review.tie and review.preferred_candidate_id is None and review.verdict == "accept"


def test_correcting_one_of_two_outputs_prefers_it_in_compare_mode(
    personas, compare_project, client_for
):
    item = item_add(compare_project, candidates=[("First.", "m1"), ("Second.", "m2")])
    second = item.candidates.get(position=1)
    c = client_for(personas["expert"])
    item_id, fields = shown(c, compare_project)
    submit(
        c, compare_project, item_id, fields, "correct",
        corrected_output="Second, fixed.", correct_candidate=str(second.pk),
    )  # fmt: skip
    review = Review.objects.get()
    assert review.verdict == "correct" and review.candidate_id == second.pk
    assert review.preferred_candidate_id == second.pk


def test_correcting_a_single_output_in_compare_mode_states_no_preference(
    personas, compare_project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, compare_project)
    candidate = items[0].candidates.get()
    submit(
        c, compare_project, item_id, fields, "correct",
        corrected_output="Fixed.", correct_candidate=str(candidate.pk),
    )  # fmt: skip
    review = Review.objects.get()
    assert review.verdict == "correct" and review.preferred_candidate_id is None


def test_labels_and_rating_are_stored(personas, project, items, client_for):
    project_settings_update(
        project=project,
        review_modes=["correct", "label"],
        label_schema=[
            {"key": "tone", "prompt": "Tone?", "type": "single_choice", "options": ["ok", "rude"],
             "required": True},
            {"key": "tags", "prompt": "Tags?", "type": "multiple_choice", "options": ["x", "y"]},
            {"key": "clarity", "prompt": "Clarity?", "type": "rating", "scale": 3},
            {"key": "note", "prompt": "Note?", "type": "text"},
        ],
    )  # fmt: skip
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    body = {
        **fields,
        "action": "accept",
        "rating": "5",
        "label-tone": "rude",
        "label-tags": ["y", "x"],
        "label-clarity": "2",
        "label-note": "short",
    }
    c.post(submit_url(project, item_id), body, **HX)
    review = Review.objects.get()
    assert review.labels == {"tone": "rude", "tags": ["x", "y"], "clarity": 2, "note": "short"}
    assert review.rating == 5


def test_a_double_post_with_the_same_key_makes_one_review(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    first = submit(c, project, item_id, fields, "accept")
    second = submit(c, project, item_id, fields, "accept")
    assert Review.objects.count() == 1
    assert item_id_of(first.content.decode()) == item_id_of(second.content.decode())
    assert Assignment.objects.filter(expert=personas["expert"], state="leased").count() == 1


def test_a_plain_form_post_redirects_to_the_review_page(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    response = c.post(submit_url(project, item_id), {**fields, "action": "accept"})
    assert response.status_code == 302 and response["Location"] == review_url(project)
    assert Review.objects.count() == 1


# ---- errors keep the draft --------------------------------------------------------------------


def test_a_validation_error_rerenders_the_item_with_everything_typed(
    personas, project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    candidate = items[0].candidates.get()
    response = submit(
        c, project, item_id, fields, "correct",
        corrected_output="Answer 1 is here.", correct_candidate=str(candidate.pk),
        rationale="My <careful> reasoning", rating="3",
    )  # fmt: skip
    page = response.content.decode()
    assert response.status_code == 200  # htmx swaps the fragment with the errors
    assert item_id_of(page) == item_id
    assert "The text is unchanged" in page
    assert "My &lt;careful&gt; reasoning" in page
    assert "\nAnswer 1 is here.</textarea>" in page
    assert 'value="3" data-number="3" checked' in page
    assert hidden(page, "idempotency_key") == fields["idempotency_key"]
    editor_tag = re.search(r'<section id="review-editor"[^>]*>', page).group(0)
    assert " hidden" not in editor_tag  # the editor stays open
    assert not Review.objects.exists()


def test_a_missing_required_label_is_reported_beside_the_question(
    personas, project, items, client_for
):
    project_settings_update(
        project=project,
        review_modes=["correct", "label"],
        label_schema=[{"key": "tone", "prompt": "Tone?", "type": "single_choice",
                       "options": ["ok", "rude"], "required": True}],
    )  # fmt: skip
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    page = submit(c, project, item_id, fields, "accept", rationale="kept").content.decode()
    assert "An answer to &#x27;Tone?&#x27; is required." in page
    assert "\nkept</textarea>" in page
    assert not Review.objects.exists()


def test_a_plain_post_with_errors_answers_400_with_the_whole_page(
    personas, project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    response = c.post(submit_url(project, item_id), {**fields, "action": "bogus"})
    assert response.status_code == 400
    assert "Unknown action." in response.content.decode()


def test_a_lost_lease_shows_the_draft_read_only_and_offers_the_next_item(
    personas, project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    later = timezone.now() + timedelta(hours=1)
    other = UserFactory(username="other-expert")
    membership_add(project, other, "expert")
    assert queue_claim_next(project=project, expert=other, now=later).item.pk == item_id
    response = submit(
        c, project, item_id, fields, "correct",
        corrected_output="My <b>precious</b> edit", rationale="Because.",
    )  # fmt: skip
    page = response.content.decode()
    assert "This item was given to someone else" in page
    assert 'readonly dir="auto">\nMy &lt;b&gt;precious&lt;/b&gt; edit</textarea>' in page
    assert "\nBecause.</textarea>" in page
    assert f'hx-get="{review_url(project)}"' in page and "Next item" in page
    assert not Review.objects.exists()


def test_an_item_that_meanwhile_got_all_its_reviews_says_so(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    later = timezone.now() + timedelta(hours=1)
    other = UserFactory(username="other-expert")
    membership_add(project, other, "expert")
    claim = queue_claim_next(project=project, expert=other, now=later)
    review_submit(item=claim.item, expert=other, verdict="accept", now=later)
    page = submit(c, project, item_id, fields, "accept", rationale="mine").content.decode()
    assert "This item already has all its reviews." in page and "\nmine</textarea>" in page


def test_deciding_an_item_twice_under_another_key_says_it_is_decided(
    personas, project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    page = submit(
        c, project, item_id, {**fields, "idempotency_key": "another"}, "reject"
    ).content.decode()
    assert "You already decided this item." in page
    assert decision_url(project, Review.objects.get().pk) in page


# ---- lease renewal ----------------------------------------------------------------------------


def test_renew_extends_the_lease(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, _ = shown(c, project)
    assignment = Assignment.objects.get(expert=personas["expert"])
    Assignment.objects.filter(pk=assignment.pk).update(
        expires_at=timezone.now() + timedelta(seconds=5)
    )
    response = c.post(renew_url(project, item_id), **HX)
    assert response.status_code == 200
    assert "Held for you until" in response.content.decode()
    assignment.refresh_from_db()
    assert assignment.expires_at > timezone.now() + timedelta(seconds=project.lease_seconds - 60)


def test_the_page_renews_every_third_of_the_lease(personas, project, items, client_for):
    project_settings_update(project=project, lease_seconds=300)
    page = client_for(personas["expert"]).get(review_url(project)).content.decode()
    assert f'hx-post="{renew_url(project, items[0].pk)}" hx-trigger="every 100s"' in page


def test_renew_after_the_lease_was_lost_replaces_the_item_and_keeps_the_draft(
    personas, project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, _ = shown(c, project)
    other = UserFactory(username="other-expert")
    membership_add(project, other, "expert")
    queue_claim_next(project=project, expert=other, now=timezone.now() + timedelta(hours=1))
    response = c.post(renew_url(project, item_id), {"rationale": "half typed"}, **HX)
    page = response.content.decode()
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#review" and response["HX-Reswap"] == "outerHTML"
    assert "given to someone else" in page and "\nhalf typed</textarea>" in page
    plain = c.post(renew_url(project, item_id))
    assert plain.status_code == 409


def test_renew_after_deciding_changes_nothing_on_the_page(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    response = c.post(renew_url(project, item_id), **HX)
    assert response.status_code == 200 and response["HX-Reswap"] == "none"


# ---- previous decisions and amendments -------------------------------------------------------


def test_previous_lists_my_decisions_and_skips_are_not_amendable(
    personas, project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "skip")
    page = c.get(reverse("feedback:review_decisions", args=[project.slug])).content.decode()
    accepted, skipped = Review.objects.order_by("created_at", "id")
    assert decision_url(project, accepted.pk) in page
    assert decision_url(project, skipped.pk) not in page and "skipped" in page
    skip_page = c.get(decision_url(project, skipped.pk)).content.decode()
    assert "a skip cannot be amended" in skip_page and "Save as a new revision" not in skip_page
    response = c.post(decision_url(project, skipped.pk), {"verdict": "accept"})
    assert response.status_code == 400 and Review.objects.get(pk=skipped.pk).revision == 1


def test_amending_creates_revision_two_and_shows_the_history(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept", rationale="First thought.")
    review = Review.objects.get()
    response = c.post(
        decision_url(project, review.pk),
        {"verdict": "correct", "corrected_output": "Answer 1 is <b>here</b>, fixed.",
         "rationale": "Second thought.", "rating": "2"},
    )  # fmt: skip
    assert response.status_code == 302
    review.refresh_from_db()
    assert review.revision == 2 and review.verdict == "correct"
    assert review.corrected_output == "Answer 1 is <b>here</b>, fixed." and review.rating == 2
    revisions = list(ReviewRevision.objects.filter(review=review).order_by("number"))
    assert [r.number for r in revisions] == [1, 2]
    assert set(revisions[1].changed) >= {"verdict", "corrected_output", "rationale", "rating"}
    page = c.get(decision_url(project, review.pk)).content.decode()
    assert "Revision 1" in page and "Revision 2" in page
    assert "First thought." in page and "Second thought." in page
    assert "Answer 1 is &lt;b&gt;here&lt;/b&gt;, fixed." in page and "<b>here</b>" not in page
    assert "Saved as revision 2." in page


def test_amending_with_an_error_keeps_the_form_and_saves_nothing(
    personas, project, items, client_for
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    review = Review.objects.get()
    response = c.post(
        decision_url(project, review.pk),
        {"verdict": "correct", "corrected_output": "Answer 1 is here.", "rationale": "kept"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "The text is unchanged" in page and "\nkept</textarea>" in page
    assert Review.objects.get().revision == 1


def test_amending_nothing_makes_no_revision(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    review = Review.objects.get()
    c.post(decision_url(project, review.pk), {"verdict": "accept"})
    assert Review.objects.get().revision == 1


@pytest.mark.parametrize("persona", ["manager", "admin", "outsider"])
def test_only_the_reviews_own_expert_may_open_or_amend_it(
    personas, project, items, client_for, persona
):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    review = Review.objects.get()
    other = client_for(personas[persona])
    assert other.get(decision_url(project, review.pk)).status_code == 404
    assert other.post(decision_url(project, review.pk), {"verdict": "reject"}).status_code == 404
    assert Review.objects.get().revision == 1


def test_another_expert_cannot_open_my_decision(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    peer = UserFactory(username="peer-expert")
    membership_add(project, peer, "expert")
    review = Review.objects.get()
    assert client_for(peer).get(decision_url(project, review.pk)).status_code == 404


# ---- persona matrix, methods, CSRF -----------------------------------------------------------


PERSONA_STATUS = [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)]


@pytest.mark.parametrize(("persona", "status"), PERSONA_STATUS)
def test_review_page_by_persona(personas, project, items, client_for, persona, status):
    assert client_for(personas[persona]).get(review_url(project)).status_code == status


@pytest.mark.parametrize(("persona", "status"), PERSONA_STATUS)
def test_managers_and_admins_may_review_too(personas, project, items, client_for, persona, status):
    c = client_for(personas[persona])
    if status == 404:
        response = c.post(submit_url(project, items[0].pk), {"action": "accept"}, **HX)
        assert response.status_code == 404
        assert c.post(renew_url(project, items[0].pk), **HX).status_code == 404
        return
    item_id, fields = shown(c, project)
    assert c.post(renew_url(project, item_id), **HX).status_code == 200
    response = submit(c, project, item_id, fields, "accept")
    assert response.status_code == 200
    assert Review.objects.get(expert=personas[persona]).verdict == "accept"


@pytest.mark.parametrize(("persona", "status"), PERSONA_STATUS)
def test_previous_decisions_by_persona(personas, project, client_for, persona, status):
    url = reverse("feedback:review_decisions", args=[project.slug])
    assert client_for(personas[persona]).get(url).status_code == status


def test_anonymous_visitors_are_sent_to_log_in(project, items, client):
    review = Review(pk=1)
    for response in (
        client.get(review_url(project)),
        client.post(submit_url(project, items[0].pk), {"action": "accept"}),
        client.post(renew_url(project, items[0].pk)),
        client.get(reverse("feedback:review_decisions", args=[project.slug])),
        client.get(decision_url(project, review.pk)),
    ):
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_an_item_of_another_project_is_404_under_this_projects_url(
    personas, project, items, client_for
):
    from tests.factories import ProjectFactory

    elsewhere = ProjectFactory()
    foreign = item_add(elsewhere)
    c = client_for(personas["expert"])
    assert c.post(submit_url(project, foreign.pk), {"action": "accept"}).status_code == 404
    assert c.post(renew_url(project, foreign.pk)).status_code == 404


def test_wrong_methods_are_refused(personas, project, items, client_for):
    c = client_for(personas["expert"])
    assert c.post(review_url(project)).status_code == 405
    assert c.get(submit_url(project, items[0].pk)).status_code == 405
    assert c.get(renew_url(project, items[0].pk)).status_code == 405
    assert c.post(reverse("feedback:review_decisions", args=[project.slug])).status_code == 405
    item_id, fields = shown(c, project)
    submit(c, project, item_id, fields, "accept")
    assert c.put(decision_url(project, Review.objects.get().pk)).status_code == 405


def test_every_post_enforces_csrf(personas, project, items, client_for):
    c = client_for(personas["expert"], enforce_csrf=True)
    item_id, fields = shown(c, project)
    assert submit(c, project, item_id, fields, "accept").status_code == 403
    assert c.post(renew_url(project, item_id), **HX).status_code == 403
    assert not Review.objects.exists()
    review_submit(item=items[0], expert=personas["expert"], verdict="accept")
    review = Review.objects.get()
    assert c.post(decision_url(project, review.pk), {"verdict": "reject"}).status_code == 403
    assert Review.objects.get().revision == 1


# ---- speed, size and safety -------------------------------------------------------------------


def test_review_page_queries_are_bounded(
    personas, compare_project, client_for, django_assert_max_num_queries
):
    guideline_publish(project=compare_project, text="Rules.", created_by=personas["manager"])
    for n in range(5):
        item_add(compare_project, priority=n, candidates=[("One.", "m1"), ("Two.", "m2")])
    c = client_for(personas["expert"])
    c.get(review_url(compare_project))  # warm the session
    with django_assert_max_num_queries(12):
        c.get(review_url(compare_project))
    with django_assert_max_num_queries(12):
        c.get(review_url(compare_project), **HX)


def test_previous_decisions_queries_are_bounded(
    personas, project, client_for, django_assert_max_num_queries, decide
):
    for n in range(8):
        item_add(project, priority=n)
    for _ in range(8):
        decide(project, personas["expert"], "accept")
    c = client_for(personas["expert"])
    review = Review.objects.first()
    with django_assert_max_num_queries(6):
        c.get(reverse("feedback:review_decisions", args=[project.slug]))
    with django_assert_max_num_queries(8):
        c.get(decision_url(project, review.pk))


def test_hostile_text_is_escaped(personas, project, client_for):
    item_add(
        project,
        external_id=HOSTILE,
        messages=[{"role": HOSTILE, "content": HOSTILE}],
        candidates=[(HOSTILE + '<a href="javascript:alert(1)">x</a>', HOSTILE)],
    )
    page = client_for(personas["expert"]).get(review_url(project)).content.decode()
    assert "<script>window" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert 'href="javascript:' not in page


def test_the_queue_start_button_leads_to_the_review_page(personas, project, items, client_for):
    page = (
        client_for(personas["expert"])
        .get(reverse("curation:queue", args=[project.slug]))
        .content.decode()
    )
    assert f'<a class="button primary big" href="{review_url(project)}" autofocus>' in page
    assert "Start reviewing" in page


def test_a_new_guideline_version_is_sent_out_of_band_with_the_next_item(
    personas, project, items, client_for
):
    guideline_publish(project=project, text="v1", created_by=personas["manager"])
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    guideline_publish(project=project, text="version **two**", created_by=personas["manager"])
    page = submit(c, project, item_id, fields, "accept").content.decode()
    assert 'id="review-guidelines"' in page and 'hx-swap-oob="true"' in page
    assert "<strong>two</strong>" in page
    assert Review.objects.get().guideline_version.version == 1  # the version the expert saw
    assert Candidate.objects.count() == 3


def test_a_scripted_client_may_name_the_action_verdict(personas, project, items, client_for):
    c = client_for(personas["expert"])
    item_id, fields = shown(c, project)
    response = c.post(submit_url(project, item_id), {**fields, "verdict": "reject"}, **HX)
    assert item_id_of(response.content.decode()) == items[1].pk
    assert Review.objects.get().verdict == "reject"
