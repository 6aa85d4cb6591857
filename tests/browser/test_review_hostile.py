"""Hostile model text on the review and amend pages stays inert text in a real browser."""

import re

import pytest
from playwright.sync_api import expect

from feedback.models import Review
from tests.factories import PASSWORD, item_add

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
LINK = '<a href="javascript:window.__pwned=1">x</a>'
HTMX = '<div hx-get="/admin/" hx-trigger="load">x</div>'
HOSTILE = f"{SCRIPT} {IMG} {LINK} {HTMX}"
RTL = "مرحبا بالعالم — שלום עולם 👋🏽🎉 done"


def log_in(page, username):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"^[^?]*/projects/$"))


def assert_inert(page):
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#review img, main img").count() == 0
    assert page.locator('main a[href^="javascript:"]').count() == 0
    assert page.locator("main [hx-get='/admin/']").count() == 0


def test_hostile_items_render_as_text_and_a_hostile_correction_stays_inert(page, personas, project):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    hostile = item_add(
        project,
        external_id=f"hostile {SCRIPT}",
        messages=[
            {"role": "system", "content": HOSTILE},
            {"role": f"user{IMG}", "content": f"Hi {HTMX}"},
        ],
        candidates=[(f"Reply {HOSTILE}", f"model {SCRIPT}")],
        priority=3,
    )
    big = item_add(
        project,
        prompt="Summarise. " + ("lorem ipsum dolor sit amet " * 8000),  # ~200 KB
        candidates=[("word " * 40_000 + SCRIPT, "base")],
        priority=2,
    )
    rtl = item_add(project, prompt=RTL, candidates=[(RTL, "base")], priority=1)

    log_in(page, personas["expert"].username)
    page.goto(f"/projects/{project.slug}/review/")
    page.locator(f'#review[data-item-id="{hostile.pk}"]').wait_for()
    assert_inert(page)
    text = page.inner_text("#review")
    for snippet in (SCRIPT, IMG, LINK, HTMX):
        assert snippet in text
    # Roles are styled upper-case, so compare the text itself.
    assert page.locator(".turn-role").all_text_contents() == ["system", f"user{IMG}"]

    # Correct it with more hostile text: the live diff shows it as text.
    page.keyboard.press("e")
    page.locator("#corrected-output").wait_for()
    page.keyboard.press("Control+End")
    page.keyboard.insert_text(f" {IMG}{SCRIPT}")
    inserted = page.locator("#review-diff ins.diff-ins")
    inserted.wait_for()
    assert IMG in inserted.inner_text() and SCRIPT in inserted.inner_text()
    assert_inert(page)
    page.keyboard.press("Control+Enter")

    # 200 KB of text: loads, and the diff stays quick on a long output.
    page.locator(f'#review[data-item-id="{big.pk}"]').wait_for()
    assert_inert(page)
    assert page.inner_text(".review-candidates").endswith(SCRIPT)
    page.keyboard.press("e")
    page.keyboard.press("Control+End")
    page.keyboard.type(" extra")
    expect(page.locator("#review-diff ins.diff-ins")).to_have_text(" extra")
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")  # close the editor; the text stays in the draft
    page.keyboard.press("s")

    # Right-to-left text and emoji, as written.
    page.locator(f'#review[data-item-id="{rtl.pk}"]').wait_for()
    assert RTL in page.inner_text("#review")
    assert page.locator(".review-prompt .model-text").get_attribute("dir") == "auto"
    page.keyboard.press("a")
    page.get_by_text("Nothing left for you here").wait_for()

    review = Review.objects.get(item=hostile)
    assert review.verdict == "correct"
    assert review.corrected_output == f"Reply {HOSTILE} {IMG}{SCRIPT}"

    # Previous decisions and the amend page show it inert too.
    page.keyboard.press("p")
    page.wait_for_url(re.compile(r"/review/decisions/$"))
    assert_inert(page)
    assert "hostile <script>window.__pwned=1" in page.inner_text("main")  # truncated
    page.goto(f"/projects/{project.slug}/review/decisions/{review.pk}/")
    assert_inert(page)
    history = page.inner_text(".revisions")
    assert f"Reply {HOSTILE} {IMG}{SCRIPT}" in history
    assert page.locator("#amend-corrected").input_value() == review.corrected_output

    page.wait_for_timeout(300)  # give any stray hx-trigger="load" a chance to fire
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert not [url for url in requests if "/admin/" in url], requests
