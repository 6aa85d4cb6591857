"""Feedback REST API: submitting, listing and amending reviews, agreement, adjudication,
outcomes and gold answers; each tried by every persona, checked against the OpenAPI schema."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
from rest_framework.test import APIClient

from curation.models import Assignment
from curation.services.queue import queue_claim_next, queue_lease_release
from curation.services.settings import guideline_publish, project_settings_update
from feedback.models import GoldAnswer, ItemOutcome, Review, ReviewRevision
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
    {"key": "helpful", "prompt": "Helpfulness", "type": "rating", "scale": 4},
]

PERSONAS = ["anonymous", "outsider", "expert", "manager", "admin"]


# ---- helpers ------------------------------------------------------------------------------


_openapi_cache: dict = {}


@pytest.fixture
def openapi(client):
    """The served OpenAPI document (JSON format), generated once per test session."""
    if "doc" not in _openapi_cache:
        response = client.get("/api/schema/", {"format": "json"})
        assert response.status_code == 200
        _openapi_cache["doc"] = json.loads(response.content)
    return _openapi_cache["doc"]


def _json_schema(node):
    """OpenAPI 3.0 schema → JSON Schema: ``nullable`` becomes a null alternative, and objects
    with declared properties refuse undeclared ones (so an undocumented key fails)."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("nullable", "readOnly", "writeOnly"):
            continue
        if key == "properties":
            out[key] = {name: _json_schema(prop) for name, prop in value.items()}
        else:
            out[key] = _json_schema(value)
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def assert_matches_schema(openapi, response, path: str, method: str) -> None:
    """The response's status is documented for ``method path`` and its body fits."""
    responses = openapi["paths"][path][method]["responses"]
    code = str(response.status_code)
    assert code in responses, f"{method.upper()} {path} does not document {code}"
    schema = responses[code]["content"]["application/json"]["schema"]
    root = {
        **_json_schema(schema),
        "components": {"schemas": _json_schema(openapi["components"]["schemas"])},
    }
    jsonschema.Draft202012Validator(root).validate(response.json())


def client_as(persona: str, personas, api_for):
    return APIClient() if persona == "anonymous" else api_for(personas[persona])


def reviews_url(item) -> str:
    return f"/api/v1/items/{item.pk}/reviews/"


def claim(project, user):
    result = queue_claim_next(project=project, expert=user)
    assert result is not None, f"nothing left for {user}"
    return result.item


def new_expert(project, username: str):
    user = UserFactory(username=username)
    membership_add(project, user, "expert")
    return user


def csrf_client(user, client_for):
    """A session-authenticated client that enforces CSRF, and a token it can choose to send."""
    from django.conf import settings
    from django.middleware.csrf import _get_new_csrf_string

    c = client_for(user, enforce_csrf=True)
    token = _get_new_csrf_string()
    c.cookies[settings.CSRF_COOKIE_NAME] = token
    return c, token


@pytest.fixture
def item(project):
    return item_add(project, candidates=[("Paris.", "base-model")])


@pytest.fixture
def pair(project):
    return item_add(project, candidates=[("Answer A", "m1"), ("Answer B", "m2")])


@pytest.fixture
def colleague(project):
    """A second expert of the project."""
    return new_expert(project, "eddie-expert")


@pytest.fixture
def disputed(project, personas, colleague, decide):
    """k=2; one item the two experts disagree on (accept vs reject): needs adjudication."""
    project_settings_update(project=project, overlap=2)
    item = item_add(project, candidates=[("Paris.", "base-model")])
    decide(project, personas["expert"], "accept")
    decide(project, colleague, "reject", rationale="wrong")
    return item


# ---- submitting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 401), ("outsider", 404), ("expert", 201), ("manager", 201), ("admin", 201)],
)
def test_submitting_a_review_by_persona(project, personas, api_for, item, persona, status):
    if persona in ("expert", "manager", "admin"):
        claim(project, personas[persona])
    response = client_as(persona, personas, api_for).post(
        reviews_url(item), {"verdict": "accept"}, format="json"
    )
    assert response.status_code == status
    assert Review.objects.count() == (1 if status == 201 else 0)


def test_submitting_requires_post_or_get(project, personas, api_for, item):
    api = api_for(personas["expert"])
    assert api.put(reviews_url(item), {"verdict": "accept"}, format="json").status_code == 405
    assert api.delete(reviews_url(item)).status_code == 405


def test_session_authenticated_submits_must_carry_the_csrf_token(
    project, personas, client_for, item
):
    claim(project, personas["expert"])
    c, token = csrf_client(personas["expert"], client_for)
    body = json.dumps({"verdict": "accept"})
    refused = c.post(reviews_url(item), body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not Review.objects.exists()
    accepted = c.post(
        reviews_url(item), body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 201


def test_accept_returns_the_review_in_the_documented_shape(
    project, personas, api_for, item, openapi
):
    guideline, _ = guideline_publish(
        project=project, text="Be precise.", created_by=personas["manager"]
    )
    claim(project, personas["expert"])
    response = api_for(personas["expert"]).post(
        reviews_url(item),
        {"verdict": "accept", "rationale": "fine", "time_spent_ms": 4200, "rating": 4},
        format="json",
    )
    assert response.status_code == 201
    assert_matches_schema(openapi, response, "/api/v1/items/{item_id}/reviews/", "post")
    body = response.json()
    assert set(body) == {"review"}
    review = Review.objects.get()
    candidate = item.candidates.get().pk
    assert body["review"] == {
        "id": review.pk,
        "item": item.pk,
        "expert": "erin-expert",
        "verdict": "accept",
        "candidate": candidate,
        "corrected_output": "",
        "preferred_candidate": None,
        "rating": 4,
        "labels": {},
        "rationale": "fine",
        "time_spent_ms": 4200,
        "candidate_order": [candidate],
        "guideline_version": guideline.version,
        "revision": 1,
        "created_at": body["review"]["created_at"],
        "updated_at": body["review"]["updated_at"],
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"verdict": "accept"}, {"verdict": "accept", "corrected_output": ""}),
        (
            {"verdict": "correct", "corrected_output": "Paris, France."},
            {"verdict": "correct", "corrected_output": "Paris, France."},
        ),
        (
            {"verdict": "reject", "rationale": "Too short."},
            {"verdict": "reject", "rationale": "Too short."},
        ),
        (
            {"verdict": "skip", "rationale": "Not my field."},
            {"verdict": "skip", "candidate": None, "rationale": "Not my field."},
        ),
    ],
)
def test_each_verdict_is_recorded_with_its_fields(
    project, personas, api_for, item, fields, expected
):
    claim(project, personas["expert"])
    response = api_for(personas["expert"]).post(reviews_url(item), fields, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()["review"]
    for key, value in expected.items():
        assert body[key] == value, key
    review = Review.objects.get()
    for key, value in expected.items():
        stored = review.candidate_id if key == "candidate" else getattr(review, key)
        assert stored == value, key
    assignment = Assignment.objects.get(item=item, expert=personas["expert"])
    assert assignment.state == ("skipped" if fields["verdict"] == "skip" else "submitted")


def test_a_preference_is_a_candidate_id_or_tie(project, personas, colleague, api_for, pair):
    project_settings_update(project=project, overlap=2, review_modes=["correct", "compare"])
    a, b = pair.candidates.order_by("position")
    claim(project, personas["expert"])
    picked = api_for(personas["expert"]).post(
        reviews_url(pair),
        {"verdict": "accept", "preferred_candidate": b.pk, "candidate_order": [b.pk, a.pk]},
        format="json",
    )
    assert picked.status_code == 201, picked.json()
    assert picked.json()["review"]["preferred_candidate"] == b.pk
    assert picked.json()["review"]["candidate"] == b.pk
    assert picked.json()["review"]["candidate_order"] == [b.pk, a.pk]
    claim(project, colleague)
    tie = api_for(colleague).post(
        reviews_url(pair),
        {"verdict": "accept", "preferred_candidate": "tie", "candidate": a.pk},
        format="json",
    )
    assert tie.status_code == 201, tie.json()
    assert tie.json()["review"]["preferred_candidate"] == "tie"
    stored = Review.objects.get(expert=colleague)
    assert stored.tie and stored.preferred_candidate_id is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({}, "verdict"),
        ({"verdict": "correct"}, "corrected_output"),
        ({"verdict": "correct", "corrected_output": "Paris."}, "corrected_output"),
        ({"verdict": "accept", "corrected_output": "Lyon."}, "corrected_output"),
        ({"verdict": "accept", "preferred_candidate": "both"}, "preferred_candidate"),
        ({"verdict": "accept", "preferred_candidate": 999_999}, "preferred_candidate"),
        ({"verdict": "accept", "labels": {"tone": "angry"}}, "labels.tone"),
        ({"verdict": "accept", "labels": {"mood": "ok"}}, "labels.mood"),
        ({"verdict": "accept", "labels": {"helpful": 9}}, "labels.helpful"),
        ({"verdict": "accept", "labels": ["ok"]}, "labels"),
        ({"verdict": "accept", "rating": 9}, "rating"),
        ({"verdict": "accept", "rating": "great"}, "rating"),
        ({"verdict": "accept", "candidate": 999_999}, "candidate"),
        ({"verdict": "accept", "time_spent_ms": -1}, "time_spent_ms"),
        ({"verdict": "accept", "guideline_version": 42}, "guideline_version"),
        ({"verdict": "accept", "idempotency_key": "k" * 101}, "idempotency_key"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(project, personas, api_for, item, fields, field):
    project_settings_update(project=project, label_schema=SCHEMA)
    claim(project, personas["expert"])
    response = api_for(personas["expert"]).post(reviews_url(item), fields, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Review.objects.exists()
    # the lease is kept, so the expert can fix the answer and send it again
    assert Assignment.objects.get(item=item, expert=personas["expert"]).state == "leased"


def test_label_answers_are_stored_cleaned(project, personas, api_for, item):
    project_settings_update(project=project, review_modes=["correct", "label"], label_schema=SCHEMA)
    claim(project, personas["expert"])
    missing = api_for(personas["expert"]).post(
        reviews_url(item), {"verdict": "accept"}, format="json"
    )
    assert missing.status_code == 400 and "required" in missing.json()["labels.tone"][0]
    response = api_for(personas["expert"]).post(
        reviews_url(item),
        {"verdict": "accept", "labels": {"tone": "ok", "helpful": "3"}},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["review"]["labels"] == {"tone": "ok", "helpful": 3}


def test_a_retry_with_the_same_idempotency_key_returns_the_same_review(
    project, personas, api_for, item, openapi
):
    claim(project, personas["expert"])
    api = api_for(personas["expert"])
    body = {"verdict": "accept", "idempotency_key": "submit-1"}
    first = api.post(reviews_url(item), body, format="json")
    again = api.post(reviews_url(item), body, format="json")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["review"] == first.json()["review"]
    assert_matches_schema(openapi, again, "/api/v1/items/{item_id}/reviews/", "post")
    assert Review.objects.count() == 1 and ReviewRevision.objects.count() == 1


def test_a_second_decision_under_another_key_is_a_conflict_naming_the_first(
    project, personas, api_for, item, openapi
):
    claim(project, personas["expert"])
    api = api_for(personas["expert"])
    first = api.post(
        reviews_url(item), {"verdict": "accept", "idempotency_key": "a"}, format="json"
    )
    second = api.post(
        reviews_url(item), {"verdict": "reject", "idempotency_key": "b"}, format="json"
    )
    assert second.status_code == 409
    assert second.json()["review"] == first.json()["review"]["id"]
    assert "amend" in second.json()["detail"]
    assert_matches_schema(openapi, second, "/api/v1/items/{item_id}/reviews/", "post")
    assert Review.objects.get().verdict == "accept"


def test_claim_next_returns_the_next_item_under_a_lease(project, personas, api_for, openapi):
    first = item_add(project, priority=2)
    second = item_add(project, priority=1, messages=[{"role": "user", "content": "Hi"}])
    claim(project, personas["expert"])
    api = api_for(personas["expert"])
    response = api.post(
        reviews_url(first), {"verdict": "accept", "claim_next": True}, format="json"
    )
    assert response.status_code == 201
    assert_matches_schema(openapi, response, "/api/v1/items/{item_id}/reviews/", "post")
    body = response.json()
    assert set(body) == {"review", "next"}
    assert set(body["next"]) == {"item", "lease_expires_at"}
    assert body["next"]["item"]["id"] == second.pk
    assert body["next"]["item"]["messages"] == [{"role": "user", "content": "Hi"}]
    lease = Assignment.objects.get(item=second, expert=personas["expert"])
    assert lease.state == "leased"
    # exactly what the claim endpoint answers for the same lease
    claimed = api.post(f"/api/v1/projects/{project.slug}/queue/claim/").json()
    assert claimed["item"] == body["next"]["item"]
    last = api.post(reviews_url(second), {"verdict": "reject", "claim_next": True}, format="json")
    assert last.status_code == 201 and last.json()["next"] is None
    assert_matches_schema(openapi, last, "/api/v1/items/{item_id}/reviews/", "post")


def test_submit_then_next_stays_within_a_query_budget(
    project, personas, api_for, django_assert_max_num_queries
):
    first = item_add(project, priority=2)
    item_add(project, priority=1)
    claim(project, personas["expert"])
    api = api_for(personas["expert"])
    with django_assert_max_num_queries(30):
        response = api.post(
            reviews_url(first), {"verdict": "accept", "claim_next": True}, format="json"
        )
    assert response.status_code == 201 and response.json()["next"] is not None


def test_a_lost_lease_is_a_conflict(project, personas, api_for, item, openapi):
    claimed = claim(project, personas["expert"])
    queue_lease_release(item=claimed, expert=personas["expert"])
    response = api_for(personas["expert"]).post(
        reviews_url(item), {"verdict": "accept"}, format="json"
    )
    assert response.status_code == 409
    assert "no longer hold" in response.json()["detail"]
    assert_matches_schema(openapi, response, "/api/v1/items/{item_id}/reviews/", "post")
    assert not Review.objects.exists()


def test_an_item_that_filled_up_meanwhile_is_a_conflict(
    project, personas, colleague, api_for, item
):
    claimed = claim(project, personas["expert"])
    queue_lease_release(item=claimed, expert=personas["expert"])
    claim(project, colleague)
    assert (
        api_for(colleague).post(reviews_url(item), {"verdict": "accept"}, format="json").status_code
        == 201
    )
    response = api_for(personas["expert"]).post(
        reviews_url(item), {"verdict": "accept"}, format="json"
    )
    assert response.status_code == 409 and "all the reviews" in response.json()["detail"]
    assert Review.objects.count() == 1


# ---- listing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 401), ("outsider", 404), ("expert", 200), ("manager", 200), ("admin", 200)],
)
def test_listing_an_items_reviews_by_persona(project, personas, api_for, disputed, persona, status):
    response = client_as(persona, personas, api_for).get(reviews_url(disputed))
    assert response.status_code == status
    if status == 200:
        experts = {r["expert"] for r in response.json()}
        if persona == "expert":
            assert experts == {"erin-expert"}
        else:
            assert experts == {"erin-expert", "eddie-expert"}


def test_a_list_matches_the_schema_and_counts_revisions(
    project, personas, api_for, disputed, openapi
):
    review = Review.objects.get(expert=personas["expert"])
    api_for(personas["expert"]).patch(
        f"/api/v1/reviews/{review.pk}/", {"rationale": "On second thought"}, format="json"
    )
    response = api_for(personas["manager"]).get(reviews_url(disputed))
    assert_matches_schema(openapi, response, "/api/v1/items/{item_id}/reviews/", "get")
    revisions = {r["expert"]: r["revision"] for r in response.json()}
    assert revisions == {"erin-expert": 2, "eddie-expert": 1}


def test_an_expert_never_sees_another_experts_review(
    project, personas, colleague, api_for, disputed
):
    theirs = Review.objects.get(expert=colleague)
    api = api_for(personas["expert"])
    listed = api.get(reviews_url(disputed)).json()
    assert [r["expert"] for r in listed] == ["erin-expert"]
    assert "wrong" not in json.dumps(listed)
    assert api.get(f"/api/v1/reviews/{theirs.pk}/").status_code == 404
    assert (
        api.patch(f"/api/v1/reviews/{theirs.pk}/", {"rationale": "x"}, format="json").status_code
        == 404
    )
    assert api.get(f"/api/v1/items/{disputed.pk}/outcome/").status_code == 403
    # and the other way round
    mine = Review.objects.get(expert=personas["expert"])
    assert api_for(colleague).get(f"/api/v1/reviews/{mine.pk}/").status_code == 404
    Review.objects.get(pk=theirs.pk)  # untouched
    assert Review.objects.get(pk=theirs.pk).rationale == "wrong"


def test_listing_reviews_costs_the_same_for_few_or_many(
    project, personas, api_for, decide, django_assert_max_num_queries
):
    project_settings_update(project=project, overlap=5)
    item = item_add(project)
    guideline_publish(project=project, text="v1", created_by=personas["manager"])
    for n in range(5):
        decide(project, new_expert(project, f"expert-{n}"), "accept")
    api = api_for(personas["manager"])
    with django_assert_max_num_queries(4):
        response = api.get(reviews_url(item))
    assert len(response.json()) == 5
    assert {r["guideline_version"] for r in response.json()} == {1}


def test_an_expert_who_did_not_decide_an_item_lists_nothing(project, personas, api_for, item):
    other = new_expert(project, "ivy-expert")
    claim(project, other)
    api_for(other).post(reviews_url(item), {"verdict": "accept"}, format="json")
    assert api_for(personas["expert"]).get(reviews_url(item)).json() == []


# ---- one review and its amendments --------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "read", "amend"),
    [
        ("anonymous", 401, 401),
        ("outsider", 404, 404),
        ("colleague", 404, 404),
        ("owner", 200, 200),
        ("manager", 200, 403),
        ("admin", 200, 403),
    ],
)
def test_one_review_by_persona(
    project, personas, colleague, api_for, disputed, persona, read, amend
):
    review = Review.objects.get(expert=personas["expert"])
    users = {**personas, "owner": personas["expert"], "colleague": colleague}
    api = APIClient() if persona == "anonymous" else api_for(users[persona])
    url = f"/api/v1/reviews/{review.pk}/"
    assert api.get(url).status_code == read
    assert api.patch(url, {"rationale": "changed"}, format="json").status_code == amend
    review.refresh_from_db()
    assert review.revision == (2 if amend == 200 else 1)


def test_a_review_url_takes_no_post_put_or_delete(project, personas, api_for, disputed):
    review = Review.objects.get(expert=personas["expert"])
    api = api_for(personas["expert"])
    url = f"/api/v1/reviews/{review.pk}/"
    assert api.post(url, {}, format="json").status_code == 405
    assert api.put(url, {}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
    assert api.get("/api/v1/reviews/999999/").status_code == 404


def test_amendments_make_revisions(project, personas, api_for, item, openapi):
    claim(project, personas["expert"])
    api = api_for(personas["expert"])
    review_id = api.post(reviews_url(item), {"verdict": "accept"}, format="json").json()["review"][
        "id"
    ]
    url = f"/api/v1/reviews/{review_id}/"
    amended = api.patch(
        url, {"verdict": "correct", "corrected_output": "Paris, France."}, format="json"
    )
    assert amended.status_code == 200, amended.json()
    assert_matches_schema(openapi, amended, "/api/v1/reviews/{review_id}/", "patch")
    body = amended.json()
    assert body["verdict"] == "correct" and body["revision"] == 2
    assert [r["number"] for r in body["revisions"]] == [1, 2]
    assert body["revisions"][0]["data"]["verdict"] == "accept"
    assert body["revisions"][1]["changed"] == ["verdict", "corrected_output"]
    assert body["revisions"][1]["editor"] == "erin-expert"

    again = api.patch(url, {"rationale": "Capital of France."}, format="json").json()
    assert again["revision"] == 3 and again["revisions"][2]["changed"] == ["rationale"]
    assert again["corrected_output"] == "Paris, France."  # kept
    unchanged = api.patch(url, {"rationale": "Capital of France."}, format="json").json()
    assert unchanged["revision"] == 3
    assert ReviewRevision.objects.filter(review_id=review_id).count() == 3

    shown = api_for(personas["manager"]).get(url)
    assert_matches_schema(openapi, shown, "/api/v1/reviews/{review_id}/", "get")
    assert shown.json() == api.get(url).json()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"verdict": "skip"}, "verdict"),
        ({"verdict": "correct"}, "corrected_output"),
        ({"rating": 0}, "rating"),
        ({"preferred_candidate": "tie"}, "preferred_candidate"),
        ({"reviewer": "someone"}, None),
    ],
)
def test_bad_amendments_are_refused_with_the_field_named(
    project, personas, api_for, item, fields, field
):
    claim(project, personas["expert"])
    api = api_for(personas["expert"])
    review_id = api.post(reviews_url(item), {"verdict": "accept"}, format="json").json()["review"][
        "id"
    ]
    response = api.patch(f"/api/v1/reviews/{review_id}/", fields, format="json")
    if field is None:  # unknown fields are ignored: nothing server-owned can be set
        assert response.status_code == 200 and response.json()["revision"] == 1
        return
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert Review.objects.get().revision == 1


def test_a_preference_can_be_amended_to_a_tie_and_back(project, personas, api_for, pair):
    a, b = pair.candidates.order_by("position")
    claim(project, personas["expert"])
    api = api_for(personas["expert"])
    review_id = api.post(
        reviews_url(pair), {"verdict": "accept", "preferred_candidate": a.pk}, format="json"
    ).json()["review"]["id"]
    url = f"/api/v1/reviews/{review_id}/"
    tie = api.patch(url, {"preferred_candidate": "tie"}, format="json")
    assert tie.status_code == 200, tie.json()
    assert tie.json()["preferred_candidate"] == "tie"
    back = api.patch(url, {"preferred_candidate": b.pk, "candidate": b.pk}, format="json")
    assert back.status_code == 200, back.json()
    assert back.json()["preferred_candidate"] == b.pk
    stored = Review.objects.get()
    assert not stored.tie and stored.preferred_candidate_id == b.pk and stored.revision == 3


def test_amending_enforces_csrf_for_session_clients(project, personas, client_for, disputed):
    review = Review.objects.get(expert=personas["expert"])
    c, token = csrf_client(personas["expert"], client_for)
    url = f"/api/v1/reviews/{review.pk}/"
    body = json.dumps({"rationale": "changed"})
    assert c.patch(url, body, content_type="application/json").status_code == 403
    assert (
        c.patch(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token).status_code
        == 200
    )


# ---- agreement ----------------------------------------------------------------------------


@pytest.fixture
def three_pairs(project, personas, colleague, decide):
    """k=2, two experts, three items: (accept, accept), (accept, reject), (reject, reject)."""
    project_settings_update(project=project, overlap=2)
    items = [item_add(project) for _ in range(3)]
    for verdict in ("accept", "accept", "reject"):
        decide(project, personas["expert"], verdict)
    for verdict in ("accept", "reject", "reject"):
        decide(project, colleague, verdict)
    return items


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 401), ("outsider", 404), ("expert", 403), ("manager", 200), ("admin", 200)],
)
def test_agreement_by_persona(project, personas, api_for, persona, status):
    url = f"/api/v1/projects/{project.slug}/agreement/"
    assert client_as(persona, personas, api_for).get(url).status_code == status


def test_agreement_takes_only_get(project, personas, api_for):
    url = f"/api/v1/projects/{project.slug}/agreement/"
    assert api_for(personas["manager"]).post(url, {}, format="json").status_code == 405


def test_agreement_on_a_hand_computed_example(project, personas, api_for, three_pairs, openapi):
    response = api_for(personas["manager"]).get(f"/api/v1/projects/{project.slug}/agreement/")
    assert response.status_code == 200
    assert_matches_schema(openapi, response, "/api/v1/projects/{slug}/agreement/", "get")
    body = response.json()
    assert body["items_with_overlap"] == 3
    figures = {(f["key"], f["method"]): f for f in body["figures"]}
    raw = figures[("verdict", "raw")]
    assert math.isclose(raw["value"], 2 / 3) and raw["items"] == 3
    # Coincidences: 6 values (3 accept, 3 reject); one disagreeing unit gives D_o = 2/6,
    # D_e = 2·3·3 / (6·5) = 18/30, so alpha = 1 − (2/6)/(18/30) = 4/9.
    alpha = figures[("verdict", "alpha-nominal")]
    assert math.isclose(alpha["value"], 4 / 9, rel_tol=1e-9) and alpha["items"] == 3
    preference = figures[("preference", "raw")]
    assert preference["value"] is None and preference["items"] == 0 and preference["note"]


def test_agreement_with_no_reviews_says_why_it_has_no_value(project, personas, api_for, openapi):
    response = api_for(personas["admin"]).get(f"/api/v1/projects/{project.slug}/agreement/")
    assert_matches_schema(openapi, response, "/api/v1/projects/{slug}/agreement/", "get")
    body = response.json()
    assert body["items_with_overlap"] == 0
    assert all(f["value"] is None and f["note"] for f in body["figures"])


# ---- adjudication and outcomes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 401), ("outsider", 404), ("expert", 403), ("manager", 200), ("admin", 200)],
)
def test_adjudicating_by_persona(project, personas, api_for, disputed, persona, status):
    response = client_as(persona, personas, api_for).post(
        f"/api/v1/items/{disputed.pk}/adjudicate/", {"outcome": "rejected"}, format="json"
    )
    assert response.status_code == status
    outcome = ItemOutcome.objects.get(item=disputed)
    assert outcome.source == ("adjudicated" if status == 200 else "unanimous")


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 401), ("outsider", 404), ("expert", 403), ("manager", 200), ("admin", 200)],
)
def test_reading_an_outcome_by_persona(project, personas, api_for, disputed, persona, status):
    response = client_as(persona, personas, api_for).get(f"/api/v1/items/{disputed.pk}/outcome/")
    assert response.status_code == status


def test_adjudication_and_outcome_urls_refuse_other_methods(project, personas, api_for, disputed):
    api = api_for(personas["manager"])
    assert api.get(f"/api/v1/items/{disputed.pk}/adjudicate/").status_code == 405
    assert api.post(f"/api/v1/items/{disputed.pk}/outcome/", {}, format="json").status_code == 405


def test_adjudicating_enforces_csrf_for_session_clients(project, personas, client_for, disputed):
    c, _ = csrf_client(personas["manager"], client_for)
    response = c.post(
        f"/api/v1/items/{disputed.pk}/adjudicate/",
        json.dumps({"outcome": "rejected"}),
        content_type="application/json",
    )
    assert response.status_code == 403
    assert ItemOutcome.objects.get(item=disputed).outcome == "needs_adjudication"


def test_adjudication_sets_the_final_outcome(project, personas, api_for, disputed, openapi):
    api = api_for(personas["manager"])
    url = f"/api/v1/items/{disputed.pk}/outcome/"
    before = api.get(url)
    assert_matches_schema(openapi, before, "/api/v1/items/{item_id}/outcome/", "get")
    assert before.json()["outcome"] == "needs_adjudication"
    assert before.json()["decided_by"] is None and before.json()["review_count"] == 2

    candidate = disputed.candidates.get().pk
    response = api.post(
        f"/api/v1/items/{disputed.pk}/adjudicate/",
        {
            "outcome": "accepted",
            "final_candidate": candidate,
            "final_text": "Paris, the capital of France.",
            "note": "Correct but terse.",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert_matches_schema(openapi, response, "/api/v1/items/{item_id}/adjudicate/", "post")
    body = response.json()
    assert body == {
        "item": disputed.pk,
        "outcome": "accepted",
        "source": "adjudicated",
        "final_text": "Paris, the capital of France.",
        "final_candidate": candidate,
        "preferred_candidate": None,
        "tie": False,
        "agreement": 0.5,
        "review_count": 2,
        "decided_by": "mona-manager",
        "decided_at": body["decided_at"],
        "note": "Correct but terse.",
    }
    after = api.get(url)
    assert after.json() == body
    stored = ItemOutcome.objects.get(item=disputed)
    assert stored.outcome == "accepted" and stored.decided_by == personas["manager"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({}, "outcome"),
        ({"outcome": "accepted"}, "final_text"),
        ({"outcome": "rejected", "final_text": "x"}, "final_text"),
        ({"outcome": "accepted", "final_candidate": 999_999}, "final_candidate"),
        (
            {"outcome": "accepted", "final_text": "x", "preferred_candidate": "b"},
            "preferred_candidate",
        ),
    ],
)
def test_bad_adjudications_are_refused_with_the_field_named(
    project, personas, api_for, disputed, fields, field
):
    response = api_for(personas["manager"]).post(
        f"/api/v1/items/{disputed.pk}/adjudicate/", fields, format="json"
    )
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert ItemOutcome.objects.get(item=disputed).source == "unanimous"


def test_an_item_without_its_reviews_has_no_outcome_and_cannot_be_adjudicated(
    project, personas, api_for, item
):
    api = api_for(personas["manager"])
    assert api.get(f"/api/v1/items/{item.pk}/outcome/").status_code == 404
    response = api.post(
        f"/api/v1/items/{item.pk}/adjudicate/", {"outcome": "rejected"}, format="json"
    )
    assert response.status_code == 400 and "0 of 1 reviews" in response.json()["outcome"][0]


def test_an_agreed_item_shows_its_outcome(project, personas, api_for, item, decide):
    decide(project, personas["expert"], "correct", corrected_output="Paris, France.")
    body = api_for(personas["admin"]).get(f"/api/v1/items/{item.pk}/outcome/").json()
    assert body["outcome"] == "accepted" and body["source"] == "unanimous"
    assert body["final_text"] == "Paris, France." and body["agreement"] == 1.0


# ---- gold answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [
        ("anonymous", 401, 401),
        ("outsider", 404, 404),
        ("expert", 403, 403),
        ("manager", 200, 200),
        ("admin", 200, 200),
    ],
)
def test_gold_by_persona(project, personas, api_for, item, persona, read, write):
    url = f"/api/v1/items/{item.pk}/gold/"
    api = client_as(persona, personas, api_for)
    assert api.put(url, {"verdict": "reject"}, format="json").status_code == write
    if write != 200:  # the others still must not read or clear one a manager set
        api_for(personas["manager"]).put(url, {"verdict": "reject"}, format="json")
    assert api.get(url).status_code == read
    assert api.delete(url).status_code == (204 if write == 200 else write)
    assert GoldAnswer.objects.filter(item=item).exists() == (write != 200)


def test_gold_is_set_read_and_cleared(project, personas, api_for, pair, openapi):
    project_settings_update(project=project, label_schema=SCHEMA)
    api = api_for(personas["manager"])
    url = f"/api/v1/items/{pair.pk}/gold/"
    assert api.get(url).status_code == 404
    put = api.put(
        url,
        {"verdict": "accept", "preferred_candidate": "tie", "labels": {"tone": "ok"}, "note": "n"},
        format="json",
    )
    assert put.status_code == 200, put.json()
    assert_matches_schema(openapi, put, "/api/v1/items/{item_id}/gold/", "put")
    body = put.json()
    assert body == {
        "item": pair.pk,
        "verdict": "accept",
        "preferred_candidate": "tie",
        "labels": {"tone": "ok"},
        "note": "n",
        "created_by": "mona-manager",
        "updated_at": body["updated_at"],
    }
    got = api.get(url)
    assert_matches_schema(openapi, got, "/api/v1/items/{item_id}/gold/", "get")
    assert got.json() == body
    b = pair.candidates.order_by("position")[1].pk
    replaced = api.put(url, {"verdict": "reject", "preferred_candidate": b}, format="json").json()
    assert replaced["preferred_candidate"] == b and replaced["labels"] == {}
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert api.delete(url).status_code == 204


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"verdict": "skip"}, "verdict"),
        ({}, "verdict"),
        ({"verdict": "accept", "labels": {"tone": "angry"}}, "labels.tone"),
        ({"verdict": "accept", "preferred_candidate": 999_999}, "preferred_candidate"),
    ],
)
def test_bad_gold_answers_are_refused_with_the_field_named(
    project, personas, api_for, pair, fields, field
):
    project_settings_update(project=project, label_schema=SCHEMA)
    response = api_for(personas["manager"]).put(
        f"/api/v1/items/{pair.pk}/gold/", fields, format="json"
    )
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not GoldAnswer.objects.exists()


def test_gold_takes_no_post_and_enforces_csrf(project, personas, api_for, client_for, item):
    url = f"/api/v1/items/{item.pk}/gold/"
    assert api_for(personas["manager"]).post(url, {}, format="json").status_code == 405
    c, _ = csrf_client(personas["manager"], client_for)
    body = json.dumps({"verdict": "reject"})
    assert c.put(url, body, content_type="application/json").status_code == 403
    assert not GoldAnswer.objects.exists()


def test_the_schema_documents_every_feedback_endpoint(openapi):
    paths = openapi["paths"]
    assert set(paths["/api/v1/items/{item_id}/reviews/"]) >= {"get", "post"}
    assert set(paths["/api/v1/reviews/{review_id}/"]) >= {"get", "patch"}
    assert "get" in paths["/api/v1/projects/{slug}/agreement/"]
    assert "post" in paths["/api/v1/items/{item_id}/adjudicate/"]
    assert "get" in paths["/api/v1/items/{item_id}/outcome/"]
    assert set(paths["/api/v1/items/{item_id}/gold/"]) >= {"get", "put", "delete"}
    submitted = openapi["components"]["schemas"]["ReviewSubmitted"]["properties"]["next"]
    assert submitted["allOf"] == [{"$ref": "#/components/schemas/Claim"}]
