"""The item browser (pages and API): persona matrix, filters, pagination, query counts, and
hostile item text rendered inert."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from curation.models import Assignment
from tests.factories import PASSWORD, ProjectFactory, item_add

pytestmark = pytest.mark.django_db

HOSTILE = (
    "<script>window.__pwned = 1</script>"
    "<img src=x onerror=\"window.__pwned = 2; alert('img')\">"
    '<div hx-get="/pwned" hx-trigger="load" hx-swap="outerHTML">htmx</div>'
    '<a href="javascript:window.__pwned=3">click me</a>'
    "[md link](javascript:alert(1))"
)
HOSTILE_RAW = ["<script>", "<img src=x", '<div hx-get="/pwned"', 'href="javascript:']


def list_url(project, **params):
    url = reverse("curation:item_list", args=[project.slug])
    if params:
        from urllib.parse import urlencode

        url += "?" + urlencode(params)
    return url


def detail_url(item):
    return reverse("curation:item_detail", args=[item.project.slug, item.pk])


def assign(item, expert, state="leased", slot=0, minutes=10):
    now = timezone.now()
    return Assignment.objects.create(
        project=item.project,
        item=item,
        expert=expert,
        state=state,
        slot=slot if state in ("leased", "submitted") else None,
        leased_at=now,
        expires_at=now + dt.timedelta(minutes=minutes),
    )


def external_ids(response) -> list[str]:
    """External ids in the order the list page shows them."""
    return re.findall(r'/items/\d+/">([^<]+)</a>', response.content.decode())


# ---- List page: personas and methods -------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_item_list_page_by_persona(personas, project, client_for, persona, status):
    item_add(project, external_id="ext-1")
    response = client_for(personas[persona]).get(list_url(project))
    assert response.status_code == status
    if status == 200:
        assert external_ids(response) == ["ext-1"]


def test_item_list_page_needs_login(project):
    response = Client().get(list_url(project))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_item_pages_accept_only_get(personas, project, client_for):
    item = item_add(project)
    c = client_for(personas["manager"])
    for url in (list_url(project), detail_url(item)):
        assert c.post(url).status_code == 405
        assert c.delete(url).status_code == 405
    # CSRF-enforcing clients can read (GET needs no token) but still cannot post
    strict = client_for(personas["manager"], enforce_csrf=True)
    assert strict.get(list_url(project)).status_code == 200
    assert strict.post(list_url(project)).status_code == 403  # CSRF refuses before the view


def test_empty_project_says_so(personas, project, client_for):
    response = client_for(personas["manager"]).get(list_url(project))
    assert b"No items yet." in response.content


# ---- List page: filters, ordering, pagination ----------------------------------------------


@pytest.fixture
def catalogue(project):
    """Five items that differ in every filterable way."""
    now = timezone.now()
    return {
        "old": item_add(
            project,
            external_id="old",
            prompt="Summarise the contract",
            candidates=[("The contract says...", "llama-3")],
            source="import",
            created_at=now - dt.timedelta(days=30),
        ),
        "done": item_add(
            project,
            external_id="done",
            prompt="Translate to German",
            candidates=[("Guten Tag", "gpt-x"), ("Hallo", "llama-3")],
            status="complete",
            created_at=now - dt.timedelta(days=10),
        ),
        "chat": item_add(
            project,
            external_id="chat",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a PLANET"},
            ],
            candidates=[("Mars", "mistral")],
            source="generated",
            created_at=now - dt.timedelta(days=2),
        ),
        "new": item_add(
            project,
            external_id="new",
            prompt="Write a haiku",
            candidates=[("Autumn moonlight", "gpt-x")],
            created_at=now,
        ),
    }


def test_items_are_listed_newest_first(personas, project, client_for, catalogue):
    item_add(ProjectFactory(), external_id="elsewhere")
    response = client_for(personas["manager"]).get(list_url(project))
    assert external_ids(response) == ["new", "chat", "done", "old"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "complete"}, ["done"]),
        ({"status": "open"}, ["new", "chat", "old"]),
        ({"model": "llama-3"}, ["done", "old"]),  # done has two candidates: listed once
        ({"model": "gpt-x"}, ["new", "done"]),
        ({"model": "llama"}, []),  # exact model name, not a substring
        ({"source": "import"}, ["old"]),
        ({"source": "generated"}, ["chat"]),
        ({"q": "CONTRACT"}, ["old"]),  # prompt and output, case-insensitive
        ({"q": "guten"}, ["done"]),  # candidate output
        ({"q": "planet"}, ["chat"]),  # chat messages
        ({"q": "nothing like this"}, []),
        ({"status": "open", "model": "gpt-x"}, ["new"]),
    ],
)
def test_item_list_filters(personas, project, client_for, catalogue, params, expected):
    response = client_for(personas["manager"]).get(list_url(project, **params))
    assert response.status_code == 200
    assert external_ids(response) == expected
    if not expected:
        assert b"No items match these filters." in response.content


def test_item_list_filters_by_date_range(personas, project, client_for, catalogue):
    c = client_for(personas["manager"])
    today = timezone.localdate()
    week_ago = (today - dt.timedelta(days=7)).isoformat()
    assert external_ids(c.get(list_url(project, created_from=week_ago))) == ["new", "chat"]
    assert external_ids(c.get(list_url(project, created_to=week_ago))) == ["done", "old"]
    day = timezone.localtime(catalogue["done"].created_at).date().isoformat()
    assert external_ids(c.get(list_url(project, created_from=day, created_to=day))) == ["done"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"created_from": "yesterday"}, b"Enter a valid date."),
        ({"status": "archived"}, b"Select a valid choice."),
        (
            {"created_from": "2025-02-01", "created_to": "2025-01-01"},
            "“Created from” must not be after “Created to”.".encode(),
        ),
    ],
)
def test_item_list_reports_bad_filters(personas, project, client_for, params, message):
    response = client_for(personas["manager"]).get(list_url(project, **params))
    assert response.status_code == 400
    assert message in response.content


def test_item_list_tells_htmx_what_is_wrong_with_the_filters(personas, project, client_for):
    response = client_for(personas["manager"]).get(
        list_url(project, created_from="2025-02-01", created_to="2025-01-01"),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200  # htmx swaps only 2xx answers
    assert "“Created from” must not be after “Created to”." in response.content.decode()


def test_item_list_paginates_without_counting(personas, project, client_for):
    for n in range(53):
        item_add(project, external_id=f"e{n:02d}")
    c = client_for(personas["manager"])
    with CaptureQueriesContext(connection) as queries:
        first = c.get(list_url(project, model="base-model"))
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)
    ids = external_ids(first)
    assert len(ids) == 50 and ids[0] == "e52"
    content = first.content.decode()
    assert 'rel="next" href="?model=base-model&amp;page=2"' in content
    assert 'rel="prev"' not in content
    second = c.get(list_url(project, model="base-model", page=2))
    assert external_ids(second) == ["e02", "e01", "e00"]
    assert 'rel="prev" href="?model=base-model&amp;page=1"' in second.content.decode()
    assert 'rel="next"' not in second.content.decode()
    # nonsense page numbers fall back to the first page
    assert external_ids(c.get(list_url(project, page="x")))[0] == "e52"


def test_item_list_answers_htmx_with_the_results_fragment(personas, project, client_for):
    item_add(project, external_id="frag")
    response = client_for(personas["manager"]).get(
        list_url(project, q="capital"), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert external_ids(response) == ["frag"]
    assert "HX-Request" in response["Vary"]


def test_item_list_queries_are_bounded(
    personas, project, client_for, django_assert_max_num_queries
):
    for n in range(40):
        item_add(project, candidates=[(f"out {n} {m}", f"model-{m}") for m in range(3)])
    c = client_for(personas["manager"])
    # session, user, project + role, items, candidates (one prefetch for all)
    with django_assert_max_num_queries(6):
        response = c.get(list_url(project))
    assert len(external_ids(response)) == 40
    with django_assert_max_num_queries(6):
        c.get(list_url(project, q="out", model="model-1", status="open"))


# ---- Detail page --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_item_detail_page_by_persona(personas, project, client_for, persona, status):
    item = item_add(project, prompt="Why is the sky blue?", candidates=[("Rayleigh", "m1")])
    response = client_for(personas[persona]).get(detail_url(item))
    assert response.status_code == status
    if status == 200:
        assert b"Why is the sky blue?" in response.content
        assert b"Rayleigh" in response.content


def test_item_detail_under_another_projects_url_is_404(personas, project, client_for):
    other = ProjectFactory()
    item = item_add(other)
    url = reverse("curation:item_detail", args=[project.slug, item.pk])
    assert client_for(personas["admin"]).get(url).status_code == 404
    assert client_for(personas["manager"]).get(detail_url(item)).status_code == 404
    assert client_for(personas["manager"]).get(url + "x").status_code == 404


def test_item_detail_shows_a_conversation_with_roles(personas, project, client_for):
    item = item_add(
        project,
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hello?"},
            {"role": "assistant", "content": "Bonjour."},
            {"role": "user", "content": "Thanks"},
        ],
        metadata={"ticket": "T-9", "lang": "fr"},
    )
    page = client_for(personas["manager"]).get(detail_url(item)).content.decode()
    roles = re.findall(r'<span class="turn-role">(\w+)</span>', page)
    assert roles == ["system", "user", "assistant", "user"]
    assert "Answer in French." in page
    assert "&quot;ticket&quot;: &quot;T-9&quot;" in page


def test_item_detail_shows_candidates_and_assignment_history(
    personas, project, client_for, django_assert_max_num_queries
):
    from tests.factories import UserFactory, membership_add

    item = item_add(project, candidates=[(f"answer {n}", f"model-{n}") for n in range(4)])
    experts = [UserFactory(username=f"expert-{n}") for n in range(3)]
    for e in experts:
        membership_add(project, e, "expert")
    assign(item, experts[0], state="submitted", slot=0)
    assign(item, experts[1], state="released")
    assign(item, experts[2], state="leased", slot=1, minutes=-1)  # lapsed lease
    c = client_for(personas["manager"])
    # session, user, item + project, role, candidates, assignments + experts, and from
    # feedback: outcome + gold, reviews + experts, audit events + actors
    with django_assert_max_num_queries(9):
        response = c.get(detail_url(item))
    page = response.content.decode()
    for n in range(4):
        assert f"answer {n}" in page and f"model-{n}" in page
    for e in experts:
        assert e.username in page
    assert "Submitted" in page and "Released" in page and "lease lapsed" in page


# ---- Hostile text -------------------------------------------------------------------------


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


def unguarded_model_text(html: str) -> tuple[int, int]:
    """(model-text regions outside any hx-disable element, model-text regions in all)."""
    from html.parser import HTMLParser

    class Walker(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack: list[bool] = []  # per open element: is it (or an ancestor) disabled
            self.unguarded = self.total = 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            disabled = (self.stack[-1] if self.stack else False) or "hx-disable" in attrs
            if "model-text" in (attrs.get("class") or "").split():
                self.total += 1
                self.unguarded += not disabled
            if tag not in VOID:
                self.stack.append(disabled)

        def handle_endtag(self, tag):
            if tag not in VOID and self.stack:
                self.stack.pop()

    walker = Walker()
    walker.feed(html)
    return walker.unguarded, walker.total


def assert_inert(html: str):
    for raw in HOSTILE_RAW:
        assert raw not in html, raw
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert (
        "&lt;img src=x onerror=&quot;window.__pwned = 2; alert(&#x27;img&#x27;)&quot;&gt;" in html
    )
    assert "&lt;div hx-get=&quot;/pwned&quot;" in html
    assert "|safe" not in html


def test_hostile_text_is_inert_on_the_detail_page(personas, project, client_for):
    item = item_add(
        project,
        external_id="<b>ext</b>",
        prompt=HOSTILE,
        candidates=[(HOSTILE, '<i onmouseover="x">model</i>')],
        metadata={"note": HOSTILE},
        source="<s>src",
    )
    html = client_for(personas["manager"]).get(detail_url(item)).content.decode()
    assert_inert(html)
    assert "<b>ext</b>" not in html and "&lt;b&gt;ext&lt;/b&gt;" in html
    assert "<i onmouseover" not in html
    # every region holding model text sits under hx-disable, so htmx ignores anything in it
    assert unguarded_model_text(html) == (0, 3)  # prompt, candidate, metadata
    assert 'style="' not in html  # CSP: no inline styles


def test_hostile_chat_messages_are_inert(personas, project, client_for):
    item = item_add(
        project,
        messages=[{"role": "<script>r</script>", "content": HOSTILE}],
        candidates=[("fine", "m")],
    )
    html = client_for(personas["manager"]).get(detail_url(item)).content.decode()
    assert_inert(html)
    assert "<script>r</script>" not in html
    assert unguarded_model_text(html) == (0, 2)  # the message and the candidate


def test_hostile_text_is_inert_on_the_list_page(personas, project, client_for):
    item_add(project, prompt=HOSTILE, candidates=[("x", "<script>m</script>")])
    html = client_for(personas["manager"]).get(list_url(project)).content.decode()
    assert "<script>" not in html and "<img src=x" not in html and 'hx-get="/pwned"' not in html
    assert "&lt;script&gt;m&lt;/script&gt;" in html
    assert "<tbody hx-disable>" in html


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_hostile_output_runs_nothing_in_a_browser(page, personas, project):
    item = item_add(
        project,
        prompt=HOSTILE,
        candidates=[(HOSTILE, "evil-model")],
        messages=None,
    )
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("mona-manager")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))

    page.goto(detail_url(item))
    page.get_by_role("heading", name="Candidates (1)").wait_for()
    page.wait_for_load_state("networkidle")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
    assert not [u for u in requests if "/pwned" in u or u.endswith("/x")]
    # the hostile text is shown as text
    assert page.locator(".candidate .model-text").inner_text().startswith("<script>")
    assert page.locator("script", has_text="__pwned").count() == 0
    assert page.locator("[hx-get='/pwned']").count() == 0

    page.goto(list_url(project))
    page.wait_for_load_state("networkidle")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []


# ---- API: list ----------------------------------------------------------------------------


def api_list_url(project):
    return f"/api/v1/projects/{project.slug}/items/"


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_item_list_api_by_persona(personas, project, api_for, persona, status):
    item_add(project, external_id="a1")
    response = api_for(personas[persona]).get(api_list_url(project))
    assert response.status_code == status
    if status == 200:
        assert [i["external_id"] for i in response.json()["results"]] == ["a1"]


def test_item_list_api_needs_authentication_and_only_reads(personas, project, api_for):
    assert Client().get(api_list_url(project)).status_code == 401
    c = api_for(personas["manager"])
    assert c.post(api_list_url(project), {}, format="json").status_code == 405
    assert c.delete(api_list_url(project)).status_code == 405


def test_item_list_api_shape(personas, project, api_for):
    text = item_add(
        project,
        external_id="text",
        prompt="Q?",
        candidates=[("A1", "m1"), ("A2", "m2")],
        metadata={"k": "v"},
        priority=5,
    )
    chat = item_add(project, external_id="chat", messages=[{"role": "user", "content": "Hi"}])
    body = api_for(personas["manager"]).get(api_list_url(project)).json()
    assert set(body) == {"next", "previous", "results"}  # no count: keyset pages
    chat_out, text_out = body["results"]
    assert chat_out["id"] == chat.pk
    assert chat_out["messages"] == [{"role": "user", "content": "Hi"}]
    assert "prompt" not in chat_out
    assert text_out == {
        "id": text.pk,
        "external_id": "text",
        "prompt": "Q?",
        "candidates": [
            {"id": text.candidates.get(position=0).pk, "output": "A1", "model": "m1"},
            {"id": text.candidates.get(position=1).pk, "output": "A2", "model": "m2"},
        ],
        "metadata": {"k": "v"},
        "priority": 5,
        "status": "open",
        "review_count": 0,
        "source": "api",
        "created_at": text_out["created_at"],
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "complete"}, ["done"]),
        ({"model": "llama-3"}, ["done", "old"]),
        ({"source": "generated"}, ["chat"]),
        ({"q": "planet"}, ["chat"]),
        ({"q": "guten"}, ["done"]),
        ({"q": "contract"}, ["old"]),
    ],
)
def test_item_list_api_filters(personas, project, api_for, catalogue, params, expected):
    response = api_for(personas["manager"]).get(api_list_url(project), params)
    assert response.status_code == 200
    assert [i["external_id"] for i in response.json()["results"]] == expected


def test_item_list_api_filters_by_date(personas, project, api_for, catalogue):
    week_ago = (timezone.localdate() - dt.timedelta(days=7)).isoformat()
    c = api_for(personas["manager"])
    recent = c.get(api_list_url(project), {"created_from": week_ago}).json()["results"]
    assert [i["external_id"] for i in recent] == ["new", "chat"]
    older = c.get(api_list_url(project), {"created_to": week_ago}).json()["results"]
    assert [i["external_id"] for i in older] == ["done", "old"]


def test_item_list_api_reports_bad_filters(personas, project, api_for):
    c = api_for(personas["manager"])
    response = c.get(api_list_url(project), {"status": "archived", "created_from": "soon"})
    assert response.status_code == 400
    assert set(response.json()) == {"status", "created_from"}
    response = c.get(
        api_list_url(project), {"created_from": "2025-02-01", "created_to": "2025-01-01"}
    )
    assert response.status_code == 400
    assert "created_to" in response.json()


def test_item_list_api_pages_by_cursor(personas, project, api_for, django_assert_max_num_queries):
    for n in range(7):
        item_add(project, external_id=f"p{n}", candidates=[("x", "m"), ("y", "n")])
    c = api_for(personas["manager"])
    seen = []
    url = api_list_url(project) + "?page_size=3"
    while url:
        # token user, project + role, items, candidates: no COUNT, no N+1
        with django_assert_max_num_queries(5):
            body = c.get(url).json()
        seen += [i["external_id"] for i in body["results"]]
        url = body["next"]
    assert seen == [f"p{n}" for n in reversed(range(7))]


# ---- API: detail --------------------------------------------------------------------------


def api_detail_url(item):
    return f"/api/v1/items/{item.pk}/"


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_item_detail_api_by_persona(personas, project, api_for, persona, status):
    item = item_add(project, external_id="d1")
    response = api_for(personas[persona]).get(api_detail_url(item))
    assert response.status_code == status
    if status == 200:
        assert response.json()["external_id"] == "d1"


@pytest.mark.parametrize("state", ["leased", "submitted"])
def test_experts_read_items_the_queue_handed_them(personas, project, api_for, state):
    item = item_add(project, external_id="mine", candidates=[("out", "m")])
    other = item_add(project, external_id="not-mine")
    assign(item, personas["expert"], state=state)
    c = api_for(personas["expert"])
    response = c.get(api_detail_url(item))
    assert response.status_code == 200
    assert response.json()["candidates"][0]["output"] == "out"
    assert c.get(api_detail_url(other)).status_code == 403


def test_item_detail_api_unknown_ids_and_methods(personas, project, api_for):
    item = item_add(project)
    c = api_for(personas["admin"])
    assert c.get("/api/v1/items/999999999/").status_code == 404
    assert c.post(api_detail_url(item), {}, format="json").status_code == 405
    assert c.patch(api_detail_url(item), {}, format="json").status_code == 405
    assert Client().get(api_detail_url(item)).status_code == 401


def test_item_detail_api_keeps_hostile_text_as_data(personas, project, api_for):
    item = item_add(project, prompt=HOSTILE, candidates=[(HOSTILE, "m")])
    response = api_for(personas["manager"]).get(api_detail_url(item))
    assert response["Content-Type"] == "application/json"
    assert response.json()["candidates"][0]["output"] == HOSTILE


def test_openapi_schema_describes_the_item_and_settings_endpoints(client):
    import yaml

    paths = yaml.safe_load(client.get("/api/schema/").content)["paths"]
    for path in [
        "/api/v1/projects/{slug}/items/",
        "/api/v1/items/{item_id}/",
        "/api/v1/projects/{slug}/settings/",
        "/api/v1/projects/{slug}/guidelines/",
    ]:
        assert path in paths, path
    params = {p["name"] for p in paths["/api/v1/projects/{slug}/items/"]["get"]["parameters"]}
    assert {"status", "model", "source", "q", "created_from", "created_to", "cursor"} <= params
