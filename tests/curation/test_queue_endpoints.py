"""Queue API and page, tried by every persona; the claim contract."""

import pytest
from django.urls import reverse

from curation.models import Assignment, Candidate, Item
from tests.factories import UserFactory, membership_add

pytestmark = pytest.mark.django_db


@pytest.fixture
def items(project):
    first = Item.objects.create(
        project=project, external_id="a", prompt="<b>Refund?</b>", priority=1
    )
    Candidate.objects.create(item=first, position=0, output="<script>x()</script>", model="m1")
    chat = Item.objects.create(
        project=project,
        external_id="b",
        messages=[{"role": "user", "content": "Hi"}],
        metadata={"lang": "en"},
    )
    Candidate.objects.create(item=chat, position=0, output="Hello", model="m1")
    Candidate.objects.create(item=chat, position=1, output="Hey", model="m2")
    return [first, chat]


def claim_url(project):
    return f"/api/v1/projects/{project.slug}/queue/claim/"


@pytest.mark.parametrize(
    ("persona", "status"), [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)]
)
def test_claim_by_persona(personas, project, items, api_for, persona, status):
    assert api_for(personas[persona]).post(claim_url(project)).status_code == status


def test_claim_returns_the_contract_and_204_when_nothing_is_left(personas, project, items, api_for):
    api = api_for(personas["expert"])
    body = api.post(claim_url(project)).json()
    assert set(body) == {"item", "lease_expires_at"}
    assert body["item"] == {
        "id": items[0].pk,
        "external_id": "a",
        "prompt": "<b>Refund?</b>",
        "candidates": [
            {"id": items[0].candidates.get().pk, "output": "<script>x()</script>", "model": "m1"}
        ],
        "metadata": {},
    }
    from curation.services.queue import queue_record_decision

    queue_record_decision(item=items[0], expert=personas["expert"], counted=True)
    chat = api.post(claim_url(project)).json()["item"]
    assert "prompt" not in chat and chat["messages"] == [{"role": "user", "content": "Hi"}]
    assert [c["model"] for c in chat["candidates"]] == ["m1", "m2"]
    queue_record_decision(item=items[1], expert=personas["expert"], counted=True)
    response = api.post(claim_url(project))
    assert response.status_code == 204


def test_claim_rejects_get(personas, project, api_for):
    assert api_for(personas["expert"]).get(claim_url(project)).status_code == 405


def test_claim_enforces_csrf_with_session_auth(personas, project, items):
    from rest_framework.test import APIClient

    api = APIClient(enforce_csrf_checks=True)
    api.force_login(personas["expert"])
    assert api.post(claim_url(project)).status_code == 403
    assert not Assignment.objects.exists()


def test_renew_and_release(personas, project, items, api_for):
    api = api_for(personas["expert"])
    item_id = api.post(claim_url(project)).json()["item"]["id"]
    renew = api.post(f"/api/v1/items/{item_id}/lease/renew/")
    assert renew.status_code == 200 and "lease_expires_at" in renew.json()
    assert api.post(f"/api/v1/items/{item_id}/lease/release/").json() == {"released": True}
    lost = api.post(f"/api/v1/items/{item_id}/lease/renew/")
    assert lost.status_code == 409 and "no longer hold" in lost.json()["detail"]


@pytest.mark.parametrize("action", ["renew", "release"])
def test_lease_endpoints_answer_outsiders_404(personas, project, items, api_for, action):
    response = api_for(personas["outsider"]).post(f"/api/v1/items/{items[0].pk}/lease/{action}/")
    assert response.status_code == 404
    assert (
        api_for(personas["outsider"]).post("/api/v1/items/999999/lease/renew/").status_code == 404
    )


@pytest.mark.parametrize(
    ("persona", "status"), [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)]
)
def test_queue_page_by_persona(personas, project, items, client_for, persona, status):
    response = client_for(personas[persona]).get(reverse("curation:queue", args=[project.slug]))
    assert response.status_code == status


def test_start_claims_and_the_page_shows_my_item_escaped(personas, project, items, client_for):
    c = client_for(personas["expert"])
    url = reverse("curation:queue", args=[project.slug])
    assert b'data-count="left">2<' in c.get(url).content
    response = c.post(reverse("curation:queue_start", args=[project.slug]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("feedback:review", args=[project.slug])
    html = c.get(url).content.decode()
    assert "Your current item: a" in html
    assert "&lt;script&gt;x()&lt;/script&gt;" in html and "<script>x()" not in html
    assert "&lt;b&gt;Refund?&lt;/b&gt;" in html
    assert 'data-count="in-progress">1<' in html
    c.post(reverse("curation:queue_release", args=[project.slug]), {"item": items[0].pk})
    assert not Assignment.objects.filter(state="leased").exists()


def test_queue_posts_enforce_csrf_and_reject_get(personas, project, items, client_for):
    start = reverse("curation:queue_start", args=[project.slug])
    assert client_for(personas["expert"]).get(start).status_code == 405
    assert client_for(personas["expert"], enforce_csrf=True).post(start).status_code == 403


def test_outsider_cannot_release_through_another_project(personas, project, items, client_for):
    other = UserFactory(username="other-expert")
    from tests.factories import ProjectFactory

    elsewhere = ProjectFactory()
    membership_add(elsewhere, other, "expert")
    response = client_for(other).post(
        reverse("curation:queue_release", args=[elsewhere.slug]), {"item": items[0].pk}
    )
    assert response.status_code == 404


def test_queue_page_queries_are_bounded(
    personas, project, items, client_for, django_assert_max_num_queries
):
    c = client_for(personas["expert"])
    c.post(reverse("curation:queue_start", args=[project.slug]))
    with django_assert_max_num_queries(10):
        c.get(reverse("curation:queue", args=[project.slug]))


def test_claim_response_matches_the_openapi_schema(personas, project, items, api_for, client):
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)["components"]["schemas"]
    body = api_for(personas["expert"]).post(claim_url(project)).json()
    assert set(body) == set(schema["Claim"]["properties"])
    item_schema = schema[schema["Claim"]["properties"]["item"]["$ref"].rsplit("/", 1)[1]]
    assert set(body["item"]) <= set(item_schema["properties"])
    candidate_schema = item_schema["properties"]["candidates"]["items"]["$ref"].rsplit("/", 1)[1]
    assert set(body["item"]["candidates"][0]) == set(schema[candidate_schema]["properties"])
