"""Hostile text on the managers' quality pages, in a real browser: item prompts and outputs,
reviews (rationales, corrections, free-text label answers) and a model name carry script tags,
event-handler attributes, javascript: links, htmx attributes, 200 KB of text, right-to-left
text and emoji. On the dashboard, the adjudication queue and page, the item browser and the
item detail page nothing runs, nothing is fetched, and the text reads as written."""

from __future__ import annotations

import re

import pytest

from curation.services.queue import queue_claim_next
from curation.services.settings import project_settings_update
from feedback.services import review_submit
from tests.factories import PASSWORD, UserFactory, item_add, membership_add

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
LINK = '<a href="javascript:window.__pwned=1">x</a>'
HTMX = '<div hx-get="/admin/" hx-trigger="load">x</div>'
HOSTILE = f"{SCRIPT} {IMG} {LINK} {HTMX}"
RTL = "مرحبا بالعالم שלום עולם 👋🏽🎉"
BIG = ("lorem ipsum dolor sit amet " * 8000)[:200_000]
MODEL = f"{SCRIPT}<b>evil-model</b>"


def decide(project, expert, verdict, **fields):
    claim = queue_claim_next(project=project, expert=expert)
    assert claim is not None
    return review_submit(item=claim.item, expert=expert, verdict=verdict, **fields)


@pytest.fixture
def hostile_project(transactional_db, personas, project):
    """k=2 and two disputed items: one all hostile markup, one with 200 KB outputs."""
    eve = UserFactory(username="eve-expert")
    membership_add(project, eve, "expert")
    project_settings_update(
        project=project,
        overlap=2,
        label_schema=[{"key": "notes", "prompt": "Notes", "type": "text"}],
    )
    hostile = item_add(
        project,
        external_id=f"ext {SCRIPT}",
        prompt=f"{HOSTILE} {RTL}",
        candidates=[(f"{HOSTILE} {RTL}", MODEL), ("A calm answer.", "m-calm")],
        priority=2,
    )
    big = item_add(project, prompt=BIG, candidates=[(BIG, MODEL)], priority=1)
    first = hostile.candidates.order_by("position").first()
    erin = personas["expert"]
    decide(
        project,
        erin,
        "correct",
        candidate=first.pk,
        corrected_output=f"{HOSTILE} fixed {RTL}",
        rationale=f"{HOSTILE} {RTL}",
        labels={"notes": HOSTILE},
    )
    decide(project, erin, "correct", corrected_output=BIG.replace("dolor", "pain") + HOSTILE)
    decide(project, eve, "reject", candidate=first.pk, rationale=HOSTILE, labels={"notes": RTL})
    decide(project, eve, "accept", rationale=BIG[:19_000])  # rationales stop at 20,000
    return {"project": project, "hostile": hostile, "big": big}


def log_in(page, username):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))


def test_hostile_text_is_inert_on_every_quality_page(page, live_server, hostile_project):
    project = hostile_project["project"]
    hostile, big = hostile_project["hostile"], hostile_project["big"]
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    log_in(page, "mona-manager")

    def visit(path: str) -> str:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle")
        assert page.evaluate("typeof window.__pwned") == "undefined", path
        assert page.locator("script", has_text="__pwned").count() == 0, path
        assert page.locator("[hx-get='/admin/']").count() == 0, path
        assert page.locator("a[href^='javascript:']").count() == 0, path
        assert page.locator("img[src='x']").count() == 0, path
        return page.locator("main").inner_text()

    slug = project.slug
    shown = visit(f"/projects/{slug}/quality/")
    assert page.locator(".chart-model").first.inner_text() == MODEL
    assert MODEL in shown

    shown = visit(f"/projects/{slug}/adjudication/")
    assert f"ext {SCRIPT}" in shown and SCRIPT in shown

    shown = visit(f"/projects/{slug}/adjudication/{hostile.pk}/")
    assert HOSTILE in shown and RTL in shown
    rationale = page.locator(".decision .rationale").first.inner_text()
    assert rationale == f"{HOSTILE} {RTL}"
    assert page.locator(".decision .label-answer").first.inner_text() == HOSTILE
    assert page.locator(".decision .diff ins").first.inner_text().strip() != ""
    diff = page.locator(".decision .diff").first.inner_text()
    assert "fixed" in diff and SCRIPT in diff
    # the final-text box holds the correction as text
    assert page.locator("textarea[name='final_text']").input_value() == f"{HOSTILE} fixed {RTL}"

    shown = visit(f"/projects/{slug}/adjudication/{big.pk}/")
    assert len(page.locator(".candidate .model-text").first.inner_text()) >= 190_000
    assert "pain" in page.locator(".decision .diff ins").first.inner_text()

    shown = visit(f"/projects/{slug}/items/")
    assert f"ext {SCRIPT}" in shown

    for item in (hostile, big):
        shown = visit(f"/projects/{slug}/items/{item.pk}/")
        assert "erin-expert" in shown and "eve-expert" in shown
    shown = visit(f"/projects/{slug}/items/{hostile.pk}/")
    assert RTL in shown and HOSTILE in shown and MODEL in shown

    assert dialogs == []
    assert not [u for u in requests if "/admin/" in u or u.endswith("/x")], requests
