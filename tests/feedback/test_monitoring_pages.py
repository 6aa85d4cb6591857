"""The monitoring page, its webhook form, the monitoring and alerts API, and the dashboard's
alerts: persona matrix, methods, CSRF, hand-computed figures, query counts, hostile text."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from curation.services.ingest import production_outputs_ingest, sample_point
from curation.services.queue import queue_claim_next
from curation.services.settings import project_settings_update
from feedback.models import AlertWebhook
from feedback.monitoring import normalised_edit_distance
from feedback.services import review_submit
from feedback.services.drift import drift_check
from tests.factories import PASSWORD, item_add

TONE = {
    "key": "tone",
    "prompt": "Tone of the answer?",
    "type": "single_choice",
    "options": ["neutral", "friendly", "rude"],
}
PERSONA_STATUS = [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)]
API_PERSONA_STATUS = [("anonymous", 401), *PERSONA_STATUS]


def decide_at(project, expert, model, verdict, at, *, output="a b c d", tone=None, **fields):
    """One decision on a fresh single-output item of ``model``, through the queue and review
    services, made at ``at``."""
    item_add(project, candidates=[(output, model)])
    claim = queue_claim_next(project=project, expert=expert)
    if tone is not None:
        fields["labels"] = {"tone": tone}
    return review_submit(item=claim.item, expert=expert, verdict=verdict, now=at, **fields)


def page_url(project):
    return reverse("feedback:monitoring", args=[project.slug])


def webhook_url(project):
    return reverse("feedback:monitoring_webhook", args=[project.slug])


def text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def row(html: str, marker: str) -> list[str]:
    """The cells' text of the table row whose attributes contain ``marker``."""
    match = re.search(rf"<tr [^>]*{marker}[^>]*>(.*?)</tr>", html, re.S)
    assert match, marker
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", match.group(1), re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in cells]


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def figures(db, project, personas, now):
    """m-alpha, newest window: 3 accepts (tones neutral ×2, rude), 1 correction of "a b c d"
    to "a b x d" (edit distance 1 − 2·3/8 = 0.25), 1 rejection; the window before: 1 accept,
    1 rejection. Production: 6 records of m-alpha received now, half sampled."""
    project_settings_update(project=project, label_schema=[TONE], ingest_sample_fraction=0.5)
    project.refresh_from_db()
    erin = personas["expert"]
    recent, older = now - dt.timedelta(hours=1), now - dt.timedelta(days=8)
    decide_at(project, erin, "m-alpha", "accept", recent, tone="neutral")
    decide_at(project, erin, "m-alpha", "accept", recent, tone="neutral")
    decide_at(project, erin, "m-alpha", "accept", recent, tone="rude")
    decide_at(project, erin, "m-alpha", "correct", recent, corrected_output="a b x d")
    decide_at(project, erin, "m-alpha", "reject", recent)
    decide_at(project, erin, "m-alpha", "accept", older, tone="friendly")
    decide_at(project, erin, "m-alpha", "reject", older)
    ids = [f"p-{n}" for n in range(6)]
    production_outputs_ingest(
        project=project,
        records=[{"client_id": c, "prompt": "Q?", "output": "A.", "model": "m-alpha"} for c in ids],
    )
    sampled = sum(sample_point(project_id=project.pk, client_id=c) < 0.5 for c in ids)
    return {"project": project, "sampled": sampled}


def drifted(project, expert, now):
    """Just over the minimum sample: 4 of 40 rejected two weeks ago, 24 of 40 this week."""
    for n in range(80):
        at = now - dt.timedelta(days=14 if n < 40 else 2, seconds=n)
        verdict = "reject" if (n < 40 and n < 4) or (n >= 40 and n < 64) else "accept"
        decide_at(project, expert, "m-drift", verdict, at)
    (alert,) = drift_check(as_of=now)
    return alert


# ---- Persona matrix, methods, CSRF --------------------------------------------------------


@pytest.mark.parametrize(("persona", "status"), PERSONA_STATUS)
def test_the_monitoring_page_by_persona(db, project, personas, client_for, persona, status):
    assert client_for(personas[persona]).get(page_url(project)).status_code == status


@pytest.mark.parametrize(("persona", "status"), PERSONA_STATUS)
def test_saving_the_webhook_by_persona(db, project, personas, client_for, persona, status):
    response = client_for(personas[persona]).post(
        webhook_url(project), {"action": "save", "url": "https://hooks.example.com/redline"}
    )
    assert response.status_code == (302 if status == 200 else status)
    assert AlertWebhook.objects.filter(project=project).exists() == (status == 200)


def test_anonymous_visitors_are_sent_to_log_in(db, project):
    c = Client()
    for response in (
        c.get(page_url(project)),
        c.post(webhook_url(project), {"action": "save", "url": "https://x.example.com/"}),
    ):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert not AlertWebhook.objects.exists()


def test_wrong_methods_get_405(db, project, personas, client_for):
    c = client_for(personas["manager"])
    assert c.post(page_url(project)).status_code == 405
    assert c.put(page_url(project)).status_code == 405
    assert c.get(webhook_url(project)).status_code == 405
    assert c.delete(webhook_url(project)).status_code == 405


def test_the_webhook_form_needs_the_csrf_token(db, project, personas, client_for):
    c = client_for(personas["manager"], enforce_csrf=True)
    response = c.post(webhook_url(project), {"action": "save", "url": "https://x.example.com/"})
    assert response.status_code == 403
    assert not AlertWebhook.objects.exists()


@pytest.mark.parametrize("endpoint", ["monitoring", "alerts"])
@pytest.mark.parametrize(("persona", "status"), API_PERSONA_STATUS)
def test_the_monitoring_api_by_persona(db, project, personas, api_for, endpoint, persona, status):
    api = APIClient() if persona == "anonymous" else api_for(personas[persona])
    assert api.get(f"/api/v1/projects/{project.slug}/{endpoint}/").status_code == status


@pytest.mark.parametrize("endpoint", ["monitoring", "alerts"])
def test_the_monitoring_api_is_read_only(db, project, personas, api_for, client_for, endpoint):
    url = f"/api/v1/projects/{project.slug}/{endpoint}/"
    api = api_for(personas["manager"])
    for method in (api.post, api.put, api.patch, api.delete):
        assert method(url, {}, format="json").status_code == 405
    strict = client_for(personas["manager"], enforce_csrf=True)
    assert strict.post(url, {}, content_type="application/json").status_code == 403


# ---- Figures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "corrected", "distance"),
    [
        ("a b c d", "a b x d", 0.25),  # 3 of 4 words kept on each side: 1 − 6/8
        ("same words", "same  words\n", 0.0),
        ("one two", "three four", 1.0),
        ("a b", "a b c d", 1 / 3),  # 2 kept of 2 + 4: 1 − 4/6
        ("", "new text", 1.0),
    ],
)
def test_normalised_edit_distance_is_one_minus_the_word_ratio(original, corrected, distance):
    assert normalised_edit_distance(original, corrected) == pytest.approx(distance)


def test_the_page_shows_hand_computed_figures_per_model_and_window(figures, personas, client_for):
    project = figures["project"]
    html = text(client_for(personas["manager"]).get(page_url(project)))
    newest = row(html, 'data-model="m-alpha" data-window="0"')
    assert newest[0] == "m-alpha"
    assert newest[2:] == [
        "6",
        str(figures["sampled"]),
        "5",
        "60%",
        "20%",
        "20%",
        "0.25 (n=1)",
    ]
    older = row(html, 'data-model="m-alpha" data-window="1"')
    assert older[2:] == ["0", "0", "2", "50%", "0%", "50%", "—"]
    # the label answers: neutral 2, friendly 0, rude 1 in the newest window
    assert "Label answers: Tone of the answer?" in html
    assert row(html, 'data-labels="tone-0"') == [
        "m-alpha",
        *newest[1:2],
        "3",
        "2 (67%)",
        "0 (0%)",
        "1 (33%)",
    ]
    assert row(html, 'data-labels="tone-1"')[2:] == ["1", "0 (0%)", "1 (100%)", "0 (0%)"]
    # too little data for the drift test, said so
    assert row(html, 'data-finding="non_accept_rate"')[-1] == "needs 30 decisions in each window"


def test_the_api_gives_the_same_figures(figures, personas, api_for):
    project = figures["project"]
    body = api_for(personas["manager"]).get(f"/api/v1/projects/{project.slug}/monitoring/").json()
    assert body["window_days"] == 7
    rows = {(r["model"], r["window"]): r for r in body["rows"]}
    newest = rows[("m-alpha", 0)]
    assert {k: newest[k] for k in ("received", "sampled", "decisions", "accept", "correct")} == {
        "received": 6,
        "sampled": figures["sampled"],
        "decisions": 5,
        "accept": 3,
        "correct": 1,
    }
    assert newest["rates"] == {"accept": 0.6, "correct": 0.2, "reject": 0.2}
    assert (newest["edit_distance"], newest["edit_distance_n"]) == (0.25, 1)
    assert rows[("m-alpha", 1)]["decisions"] == 2
    (tone,) = body["labels"]
    assert tone["key"] == "tone" and tone["categories"] == ["neutral", "friendly", "rude"]
    counts = {(r["model"], r["window"]): r["counts"] for r in tone["rows"]}
    assert counts == {("m-alpha", 0): {"neutral": 2, "rude": 1}, ("m-alpha", 1): {"friendly": 1}}
    assert body["drift"]["policy"] == {
        "window_days": 7,
        "baseline_days": 28,
        "min_n": 30,
        "alpha": 0.01,
    }
    tests = {t["metric"]: t for t in body["drift"]["tests"]}
    assert (
        tests["non_accept_rate"]["current_n"] == 5 and tests["non_accept_rate"]["p_value"] is None
    )


def test_wider_windows_gather_more(figures, personas, api_for):
    project = figures["project"]
    url = f"/api/v1/projects/{project.slug}/monitoring/?window_days=14&windows=2"
    body = api_for(personas["manager"]).get(url).json()
    (only,) = [r for r in body["rows"] if r["model"] == "m-alpha" and r["window"] == 0]
    assert only["decisions"] == 7


@pytest.mark.parametrize("query", ["window_days=0", "window_days=91", "windows=53", "windows=x"])
def test_bad_window_choices_are_reported(db, project, personas, api_for, client_for, query):
    api = api_for(personas["manager"])
    assert api.get(f"/api/v1/projects/{project.slug}/monitoring/?{query}").status_code == 400
    response = client_for(personas["manager"]).get(f"{page_url(project)}?{query}")
    assert response.status_code == 200 and 'role="alert"' in response.content.decode()


def test_the_page_reads_a_fixed_number_of_queries(
    db, project, personas, client_for, now, django_assert_max_num_queries
):
    project_settings_update(project=project, label_schema=[TONE])
    for n in range(12):
        at = now - dt.timedelta(days=3 * n)
        decide_at(
            project,
            personas["expert"],
            f"model-{n % 4}",
            "correct",
            at,
            corrected_output="a b c e",
            tone="neutral",
        )
    production_outputs_ingest(
        project=project,
        records=[
            {"client_id": str(n), "prompt": "Q", "output": "A", "model": f"model-{n}"}
            for n in range(20)
        ],
    )
    c = client_for(personas["manager"])
    with django_assert_max_num_queries(12):
        assert c.get(page_url(project)).status_code == 200


# ---- Alerts on the dashboard, the page and the API ----------------------------------------


def test_alerts_appear_on_the_dashboard_the_page_and_the_api(
    db, project, personas, client_for, api_for, now
):
    alert = drifted(project, personas["expert"], now)
    c = client_for(personas["manager"])
    dashboard = text(c.get(reverse("feedback:dashboard", args=[project.slug])))
    assert f'data-alert="{alert.pk}"' in dashboard
    assert "Corrections and rejections of m-drift rose from 10.0% (n=40" in dashboard
    assert page_url(project) in dashboard
    page = text(c.get(page_url(project)))
    assert f'data-alert="{alert.pk}"' in page and "Not sent to a webhook." in page
    assert row(page, 'data-finding="non_accept_rate"')[-1] == "Drift"

    body = api_for(personas["manager"]).get(f"/api/v1/projects/{project.slug}/alerts/").json()
    assert body["count"] == 1
    (listed,) = body["results"]
    assert listed["id"] == alert.pk and listed["model"] == "m-drift"
    assert (listed["baseline_value"], listed["current_value"]) == (0.1, 0.6)
    assert (listed["delivered_at"], listed["delivery_attempts"], listed["delivery_error"]) == (
        None,
        0,
        "",
    )


def test_an_empty_dashboard_says_there_are_no_alerts(db, project, personas, client_for):
    html = text(
        client_for(personas["manager"]).get(reverse("feedback:dashboard", args=[project.slug]))
    )
    assert "No drift alerts" in html


# ---- The webhook form -----------------------------------------------------------------------


def test_managers_save_rotate_and_remove_the_webhook(db, project, personas, client_for):
    c = client_for(personas["manager"])
    response = c.post(
        webhook_url(project), {"action": "save", "url": "https://hooks.example.com/a"}, follow=True
    )
    assert b"Webhook saved." in response.content
    secret = AlertWebhook.objects.get(project=project).secret
    assert secret in response.content.decode()
    assert "https://hooks.example.com/a" in response.content.decode()

    c.post(webhook_url(project), {"action": "rotate"})
    rotated = AlertWebhook.objects.get(project=project).secret
    assert rotated != secret

    response = c.post(webhook_url(project), {"action": "clear"}, follow=True)
    assert b"Webhook removed." in response.content
    assert not AlertWebhook.objects.exists()


@pytest.mark.parametrize(
    "url", ["", "javascript:alert(1)", "ftp://files.example.com/", "no scheme.example.com"]
)
def test_a_bad_webhook_url_is_refused_with_its_reason(db, project, personas, client_for, url):
    response = client_for(personas["manager"]).post(
        webhook_url(project), {"action": "save", "url": url}
    )
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert not AlertWebhook.objects.exists()


def test_an_unknown_webhook_action_is_refused(db, project, personas, client_for):
    response = client_for(personas["manager"]).post(webhook_url(project), {"action": "explode"})
    assert response.status_code == 400


def test_experts_never_see_the_secret(db, project, personas, client_for):
    client_for(personas["manager"]).post(
        webhook_url(project), {"action": "save", "url": "https://hooks.example.com/a"}
    )
    secret = AlertWebhook.objects.get(project=project).secret
    for path in (page_url(project), reverse("curation:queue", args=[project.slug])):
        response = client_for(personas["expert"]).get(path)
        assert secret not in response.content.decode()


# ---- Hostile text -------------------------------------------------------------------------

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
HTMX = '<div hx-get="/admin/" hx-trigger="load">x</div>'
HOSTILE_MODEL = f"{SCRIPT}{IMG}"
HOSTILE_OPTION = f"{IMG}{HTMX}"


def hostile(project, expert, now):
    project_settings_update(
        project=project,
        label_schema=[{**TONE, "options": ["neutral", HOSTILE_OPTION]}],
        ingest_sample_fraction=1.0,
    )
    project.refresh_from_db()
    production_outputs_ingest(
        project=project,
        records=[{"client_id": "x1", "prompt": HTMX, "output": SCRIPT, "model": HOSTILE_MODEL}],
    )
    for n in range(80):
        at = now - dt.timedelta(days=14 if n < 40 else 2, seconds=n)
        verdict = "reject" if (n < 40 and n < 4) or (n >= 40 and n < 64) else "accept"
        tone = HOSTILE_OPTION if n >= 60 else "neutral"
        decide_at(project, expert, HOSTILE_MODEL, verdict, at, output=SCRIPT, tone=tone)
    assert drift_check(as_of=now)


def test_hostile_model_names_and_labels_are_escaped(db, project, personas, client_for, now):
    hostile(project, personas["expert"], now)
    c = client_for(personas["manager"])
    for path in (page_url(project), reverse("feedback:dashboard", args=[project.slug])):
        html = c.get(path).content.decode()
        assert "window.__pwned" in html  # the text is there...
        assert "<script>window.__pwned" not in html  # ...but never as markup
        assert "<img src=x" not in html and '<div hx-get="/admin/"' not in html
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html


def log_in(page, username):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))


@pytest.mark.browser
def test_hostile_text_is_inert_on_the_monitoring_page_in_a_browser(
    transactional_db, page, live_server, project, personas, now
):
    hostile(project, personas["expert"], now)
    log_in(page, personas["manager"].username)
    for path in (page_url(project), reverse("feedback:dashboard", args=[project.slug])):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__pwned") is None
    page.goto(page_url(project))
    assert HOSTILE_MODEL in page.locator("table.monitoring-windows").text_content()
    assert HOSTILE_OPTION in page.locator("table.monitoring-labels").text_content()
    assert (
        f"Corrections and rejections of {HOSTILE_MODEL} rose"
        in page.locator("ul.alerts").inner_text()
    )
