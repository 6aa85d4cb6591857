"""A manager builds a dataset version in a real browser: the live count follows the filters
(htmx, no page load), the build runs on a real Celery worker while the page shows progress,
the page reloads itself when it is done, and hostile texts in the sample rows stay inert.
The ``page`` fixture fails the test on any console error, CSP violations included."""

from __future__ import annotations

import re

import pytest

from tests.factories import PASSWORD
from training.models import DatasetVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'


def test_a_manager_builds_a_version_and_browses_it(
    page, live_server, personas, project, experts, decide_item, celery_worker
):
    e = experts[0]
    decide_item(project, [(e, "accept", {})], prompt=HOSTILE, candidates=[(HOSTILE, "m")])
    decide_item(
        project,
        [(e, "correct", {"corrected_output": "Paris, France."})],
        candidates=[("Paris.", "m")],
    )
    decide_item(project, [(e, "reject", {})], prompt="Bad?", candidates=[("No.", "m")])

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("mona-manager")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))
    page.goto(f"/projects/{project.slug}/datasets/")
    count = page.locator(".selection-total strong")
    assert count.inner_text() == "2"
    page.get_by_label("Rejected").check()
    page.locator('.selection-total strong[data-selected="3"]').wait_for()
    assert page.url.endswith(f"/projects/{project.slug}/datasets/")  # no page load

    page.get_by_label("Eval fraction").fill("0")
    page.get_by_role("button", name="Build this version").click()
    page.wait_for_url(re.compile(r"/datasets/\d+/$"))
    # the worker builds; the status partial polls, then reloads the page with the files
    page.get_by_role("heading", name="Files").wait_for(timeout=30_000)
    version = DatasetVersion.objects.get()
    assert version.status == "succeeded"
    assert page.get_by_role("link", name="sft.train.jsonl").is_visible()
    sample = page.locator(".samples").inner_text()
    assert HOSTILE in sample
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0
