"""An expert works through five items with the keyboard only: accept, correct (seeing the
diff), reject with a reason, skip, and pick the better of two outputs."""

import re

import pytest
from playwright.sync_api import expect

from curation.services.settings import project_settings_update
from feedback.models import Review
from feedback.selectors import candidate_order_for
from tests.factories import PASSWORD, item_add

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, username):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"^[^?]*/projects/$"))


def wait_for_item(page, item):
    page.locator(f'#review[data-item-id="{item.pk}"]').wait_for()


def test_expert_reviews_five_items_by_keyboard_only(page, personas, project):
    project_settings_update(project=project, review_modes=["correct", "compare"])
    expert = personas["expert"]
    items = [
        item_add(project, external_id=f"kb-{n}", prompt=f"Question {n}?", priority=100 - n,
                 candidates=[(f"Answer {n} is fine.", "base")])
        for n in range(1, 5)
    ]  # fmt: skip
    items.append(
        item_add(
            project,
            external_id="kb-5",
            prompt="Which is better?",
            priority=1,
            candidates=[("Left answer.", "base"), ("Right answer.", "adapter")],
        )
    )

    log_in(page, expert.username)
    page.goto(f"/projects/{project.slug}/queue/")
    page.wait_for_function("document.activeElement.textContent.trim() === 'Start reviewing'")
    page.keyboard.press("Enter")  # "Start reviewing" has the focus (autofocus)
    page.wait_for_url(re.compile(rf"/projects/{project.slug}/review/$"))
    wait_for_item(page, items[0])
    page.evaluate("window.__samePage = true")

    page.keyboard.press("?")
    assert page.locator("#review-shortcuts").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#review-shortcuts").is_visible()

    # 1: accept
    page.keyboard.press("a")
    wait_for_item(page, items[1])

    # 2: correct, watching the live diff
    page.keyboard.press("e")
    editor = page.locator("#corrected-output")
    editor.wait_for()
    assert editor.evaluate("el => el === document.activeElement")
    assert editor.input_value() == "Answer 2 is fine."
    page.keyboard.press("Control+End")
    page.keyboard.type(" Indeed")
    # The diff follows the typing (debounced): wait for it to catch up with the last key.
    expect(page.locator("#review-diff ins.diff-ins")).to_have_text(" Indeed")
    page.keyboard.press("Control+Enter")
    wait_for_item(page, items[2])

    # 3: reject, with a reason typed in the rationale
    page.keyboard.press("r")
    assert page.locator("#rationale").evaluate("el => el === document.activeElement")
    page.keyboard.type("The answer is wrong.")
    page.keyboard.press("Control+Enter")
    wait_for_item(page, items[3])

    # 4: skip
    page.keyboard.press("s")
    wait_for_item(page, items[4])

    # 5: two outputs side by side, in this expert's order; B is better
    shown = page.locator(".review-candidates .model-text").all_inner_texts()
    ids = [c.pk for c in items[4].candidates.order_by("position")]
    order = candidate_order_for(item_id=items[4].pk, expert_id=expert.pk, candidate_ids=ids)
    by_id = {c.pk: c.output for c in items[4].candidates.all()}
    assert shown == [by_id[cid] for cid in order]
    page.keyboard.press("2")
    page.get_by_text("Nothing left for you here").wait_for()
    assert page.evaluate("window.__samePage") is True  # every item swapped in, no page load

    reviews = {r.item_id: r for r in Review.objects.filter(expert=expert)}
    assert set(reviews) == {item.pk for item in items}
    one, two, three, four, five = (reviews[item.pk] for item in items)
    assert one.verdict == "accept" and one.corrected_output == "" and one.rationale == ""
    assert two.verdict == "correct" and two.corrected_output == "Answer 2 is fine. Indeed"
    assert two.candidate_id == items[1].candidates.get().pk
    assert three.verdict == "reject" and three.rationale == "The answer is wrong."
    assert four.verdict == "skip"
    assert five.verdict == "accept" and not five.tie
    assert five.preferred_candidate_id == order[1] == five.candidate_id
    assert five.candidate_order == order
    assert all(r.time_spent_ms and r.time_spent_ms > 0 for r in reviews.values())
    assert all(r.idempotency_key for r in reviews.values())
    assert Review.objects.count() == 5


def test_label_questions_and_the_rating_answer_number_keys(page, personas, project):
    project_settings_update(
        project=project,
        review_modes=["correct", "label"],
        label_schema=[
            {"key": "tone", "prompt": "Tone?", "type": "single_choice",
             "options": ["polite", "rude", "neutral"], "required": True},
            {"key": "tags", "prompt": "Tags?", "type": "multiple_choice", "options": ["x", "y"]},
        ],
    )  # fmt: skip
    item = item_add(project)
    log_in(page, personas["expert"].username)
    page.goto(f"/projects/{project.slug}/review/")
    wait_for_item(page, item)
    page.keyboard.press("2")  # no question focused: nothing happens
    page.keyboard.press("l")
    page.keyboard.press("3")
    assert page.locator('input[name="label-tone"][value="neutral"]').is_checked()
    page.keyboard.press("Tab")  # the next question: tags
    page.keyboard.press("2")
    page.keyboard.press("1")
    page.keyboard.press("Tab")  # each checkbox is a stop: from "x" to "y"...
    page.keyboard.press("Tab")  # ...then the rating (a radio group is one stop)
    page.keyboard.press("4")
    assert page.locator('input[name="rating"][value="4"]').is_checked()
    page.keyboard.press("a")
    page.get_by_text("Nothing left for you here").wait_for()
    review = Review.objects.get()
    assert review.labels == {"tone": "neutral", "tags": ["x", "y"]}
    assert review.rating == 4


def test_errors_keep_the_correction_and_a_draft_survives_a_reload(page, personas, project):
    item = item_add(project, candidates=[("Paris is the capital.", "base")])
    log_in(page, personas["expert"].username)
    page.goto(f"/projects/{project.slug}/review/")
    wait_for_item(page, item)

    page.keyboard.press("e")
    page.keyboard.press("Control+Enter")  # unchanged text: refused, the editor stays open
    page.get_by_text("The text is unchanged").wait_for()
    editor = page.locator("#corrected-output")
    assert editor.is_visible() and editor.input_value() == "Paris is the capital."

    page.keyboard.press("Control+End")
    page.keyboard.type(" Really.")
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    page.keyboard.type("Half a thought")
    # The draft is saved a moment after typing.
    page.wait_for_function(
        "key => (sessionStorage.getItem(key) || '').includes('Half a thought')",
        arg=f"redline:review-draft:{item.pk}",
    )
    page.reload()
    wait_for_item(page, item)
    page.get_by_text("Your unsent draft for this item was restored.").wait_for()
    assert page.locator("#corrected-output").input_value() == "Paris is the capital. Really."
    assert page.locator("#rationale").input_value() == "Half a thought"
    expect(page.locator("#review-diff ins.diff-ins")).to_have_text(" Really.")
    page.keyboard.press("Control+Enter")
    page.get_by_text("Nothing left for you here").wait_for()
    review = Review.objects.get()
    assert review.corrected_output == "Paris is the capital. Really."
    assert review.rationale == "Half a thought"
    # The decided item's draft is gone from the session.
    assert page.evaluate(f"sessionStorage.getItem('redline:review-draft:{item.pk}')") is None


def test_a_lost_item_shows_the_draft_and_j_moves_on(page, personas, project):
    from datetime import timedelta

    from django.utils import timezone

    from curation.services.queue import queue_claim_next
    from tests.factories import UserFactory, membership_add

    first = item_add(project, priority=2)
    second = item_add(project, priority=1)
    log_in(page, personas["expert"].username)
    page.goto(f"/projects/{project.slug}/review/")
    wait_for_item(page, first)

    other = UserFactory(username="other-expert")
    membership_add(project, other, "expert")
    later = timezone.now() + timedelta(hours=1)
    assert queue_claim_next(project=project, expert=other, now=later).item.pk == first.pk

    page.keyboard.press("e")
    page.keyboard.press("Control+End")
    page.keyboard.type(" My careful edit.")
    page.keyboard.press("Control+Enter")
    page.get_by_text("This item was given to someone else").wait_for()
    assert "My careful edit." in page.locator("#lost-correction").input_value()
    page.keyboard.press("j")
    wait_for_item(page, second)
    assert not Review.objects.exists()


def test_the_page_renews_its_lease_and_shows_a_lost_one_with_the_draft(page, personas, project):
    from datetime import timedelta

    from django.utils import timezone

    from curation.models import Assignment
    from curation.services.queue import queue_claim_next
    from tests.factories import UserFactory, membership_add

    item = item_add(project)
    expert = personas["expert"]
    log_in(page, expert.username)
    page.goto(f"/projects/{project.slug}/review/")
    wait_for_item(page, item)
    renew = f"/projects/{project.slug}/review/{item.pk}/renew/"
    # The page polls every lease/3 seconds; fire one poll now rather than wait for it.
    fire = (
        "url => htmx.ajax('POST', url, {source: '#lease-status', target: '#lease-status',"
        " swap: 'innerHTML'})"
    )
    Assignment.objects.filter(expert=expert).update(expires_at=timezone.now())
    with page.expect_response(lambda r: r.url.endswith(renew)):
        page.evaluate(fire, renew)
    assert Assignment.objects.get(expert=expert).expires_at > timezone.now() + timedelta(
        seconds=project.lease_seconds - 60
    )
    assert "Held for you until" in page.inner_text("#lease-status")

    page.keyboard.press("n")
    page.keyboard.type("Notes I must not lose")
    other = UserFactory(username="other-expert")
    membership_add(project, other, "expert")
    queue_claim_next(project=project, expert=other, now=timezone.now() + timedelta(hours=1))
    page.evaluate(fire, renew)
    page.get_by_text("This item was given to someone else").wait_for()
    assert page.locator("#lost-rationale").input_value() == "Notes I must not lose"
