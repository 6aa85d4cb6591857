"""The submit-then-next hot path (POST /api/v1/items/{id}/reviews/ with claim_next) answers
exactly as the general machinery would: token authentication in one statement, the access
check without the ORM, the input parsed without DRF's fields, the review built by hand, the
queue's writes merged, prepared statements. Each shortcut is held against what it replaces."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from curation.models import Assignment, AssignmentState, Item
from curation.permissions import get_item_for_user
from curation.services.queue import queue_claim_next
from curation.services.settings import guideline_publish, project_settings_update
from feedback.models import AuditAction, AuditEvent, ItemOutcome, Review, ReviewRevision
from feedback.permissions import get_item_for_review
from feedback.serializers import (
    ReviewOutputSerializer,
    ReviewSubmitInputSerializer,
    review_payload,
    review_submit_input,
)
from feedback.services import review_submit
from redline.lib.db import hot_cursor
from tests.factories import UserFactory, item_add, membership_add

pytestmark = pytest.mark.django_db

LABELS = [
    {
        "key": "tone",
        "prompt": "Tone?",
        "type": "single_choice",
        "options": ["ok", "rude"],
        "required": False,
    }
]


def submit(api, item, **body):
    return api.post(f"/api/v1/items/{item.pk}/reviews/", body, format="json")


# ---- token authentication -------------------------------------------------------------------


def test_a_valid_token_authenticates_and_a_bad_one_is_refused_like_drf(project, personas):
    item = item_add(project)
    queue_claim_next(project=project, expert=personas["expert"])
    token = Token.objects.create(user=personas["expert"])
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    refused = submit(bad, item, verdict="accept")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Invalid token."}
    assert refused["WWW-Authenticate"] == "Token"
    good = APIClient()
    good.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = submit(good, item, verdict="accept")
    assert response.status_code == 201
    assert response.json()["review"]["expert"] == personas["expert"].username


def test_a_deactivated_user_or_deleted_token_is_refused_at_once(project, personas):
    """Nothing is cached: the next request after the change is refused."""
    item = item_add(project)
    api = APIClient()
    token = Token.objects.create(user=personas["expert"])
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    queue_claim_next(project=project, expert=personas["expert"])
    personas["expert"].is_active = False
    personas["expert"].save(update_fields=["is_active"])
    response = submit(api, item, verdict="accept")
    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted."}
    personas["expert"].is_active = True
    personas["expert"].save(update_fields=["is_active"])
    token.delete()
    assert submit(api, item, verdict="accept").status_code == 401
    assert not Review.objects.exists()


# ---- the access check -----------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["outsider", "expert", "manager", "admin"])
def test_access_check_answers_as_get_item_for_user(project, personas, persona):
    user = personas[persona]
    item = item_add(project, messages=[{"role": "user", "content": "Hi"}])
    for item_id in (item.pk, str(item.pk), item.pk + 10_000, "x", None):
        try:
            expected = get_item_for_user(user, item_id)
        except Http404:
            with pytest.raises(Http404):
                get_item_for_review(user, item_id)
            continue
        got = get_item_for_review(user, item_id)
        assert got.pk == expected.pk
        assert got.project.user_role == expected.project.user_role
        for field in Item._meta.concrete_fields:  # every column, JSON ones decoded
            assert getattr(got, field.attname) == getattr(expected, field.attname), field.name
        assert got.project.label_schema == expected.project.label_schema
        assert got.project.overlap == expected.project.overlap


def test_access_check_refuses_a_member_below_the_role_with_403(project, personas):
    from django.core.exceptions import PermissionDenied

    item = item_add(project)
    with pytest.raises(PermissionDenied):
        get_item_for_review(personas["expert"], item.pk, role="manager")
    assert get_item_for_review(personas["manager"], item.pk, role="manager").pk == item.pk


# ---- the input --------------------------------------------------------------------------------

PLAIN = [
    {"verdict": "accept"},
    {"verdict": "accept", "claim_next": True, "idempotency_key": "  k-1  "},
    {"verdict": "skip", "rationale": None, "corrected_output": None},
    {
        "verdict": "correct",
        "corrected_output": "Paris, France. ünïcode ✓",
        "candidate": 7,
        "preferred_candidate": "tie",
        "rating": 3,
        "labels": {"tone": "ok", "n": [1, {"x": None}]},
        "rationale": "  spaces kept  ",
        "time_spent_ms": 0,
        "candidate_order": [3, 1, 2],
        "guideline_version": 2,
        "idempotency_key": "k" * 100,
        "claim_next": False,
        "unknown_field": "ignored, as the serializer does",
    },
    {"verdict": "reject", "preferred_candidate": 5, "candidate": None, "rating": None},
    {"verdict": "accept", "labels": {}, "candidate_order": []},
]

UNUSUAL = [  # the serializer decides (accepting some, refusing others)
    {},
    {"verdict": "maybe"},
    {"verdict": 1},
    {"verdict": "accept", "candidate": "7"},
    {"verdict": "accept", "candidate": True},
    {"verdict": "accept", "candidate": 7.0},
    {"verdict": "accept", "rating": "4"},
    {"verdict": "accept", "preferred_candidate": "12"},
    {"verdict": "accept", "preferred_candidate": False},
    {"verdict": "accept", "labels": None},
    {"verdict": "accept", "labels": []},
    {"verdict": "accept", "rationale": 5},
    {"verdict": "accept", "rationale": "nul\x00byte"},
    {"verdict": "accept", "corrected_output": "\ud800"},
    {"verdict": "accept", "time_spent_ms": -1},
    {"verdict": "accept", "time_spent_ms": "12"},
    {"verdict": "accept", "candidate_order": [1, "2"]},
    {"verdict": "accept", "candidate_order": "1,2"},
    {"verdict": "accept", "idempotency_key": "k" * 101},
    {"verdict": "accept", "idempotency_key": None},
    {"verdict": "accept", "claim_next": "true"},
    {"verdict": "accept", "claim_next": 1},
]


@pytest.mark.parametrize("data", PLAIN)
def test_plain_input_is_parsed_as_the_serializer_parses_it(data):
    fast = review_submit_input(data)
    assert fast is not None, "a plain JSON body must take the fast path"
    serializer = ReviewSubmitInputSerializer(data=data)
    assert serializer.is_valid(), serializer.errors
    assert fast == dict(serializer.validated_data)


@pytest.mark.parametrize("data", UNUSUAL)
def test_unusual_input_is_left_to_the_serializer(data):
    assert review_submit_input(data) is None


def test_form_encoded_input_is_left_to_the_serializer():
    from django.http import QueryDict

    assert review_submit_input(QueryDict("verdict=accept")) is None
    assert review_submit_input([{"verdict": "accept"}]) is None


def test_unusual_input_still_gets_the_serializers_errors(project, personas, api_for):
    item = item_add(project)
    queue_claim_next(project=project, expert=personas["expert"])
    response = submit(api_for(personas["expert"]), item, verdict="accept", rating="x")
    assert response.status_code == 400
    assert response.json() == {"rating": ["A valid integer is required."]}
    response = submit(api_for(personas["expert"]), item, verdict="accept", rating="4")
    assert response.status_code == 201 and response.json()["review"]["rating"] == 4


# ---- the answer -----------------------------------------------------------------------------


def test_review_payload_is_the_serializers_output(project, personas, decide):
    project_settings_update(project=project, label_schema=LABELS, review_modes=["compare"])
    guideline, _ = guideline_publish(
        project=project, text="Be kind.", created_by=personas["manager"]
    )
    colleague = UserFactory(username="carl")
    membership_add(project, colleague, "expert")
    third = UserFactory(username="tess")
    membership_add(project, third, "expert")
    item_add(project, candidates=[("A", "m1"), ("B", "m2")])
    item_add(project, candidates=[("C", "m1"), ("D", "m2")])
    item_add(project, candidates=[("E", "m1")])
    first = decide(
        project,
        personas["expert"],
        "correct",
        corrected_output="A, better",
        preferred_candidate=None,
        tie=True,
        rating=5,
        labels={"tone": "rude"},
        rationale="why",
        time_spent_ms=1234,
    ).review
    claim = queue_claim_next(project=project, expert=colleague)
    shown = list(claim.item.candidates.order_by("-position"))
    second = review_submit(
        item=claim.item,
        expert=colleague,
        verdict="reject",
        preferred_candidate=shown[0].pk,
        candidate_order=[c.pk for c in shown],
        guideline_version=guideline,
    ).review
    third_review = decide(project, third, "skip").review
    for review in (first, second, third_review):
        assert review_payload(review) == ReviewOutputSerializer(review).data
        stored = Review.objects.select_related("expert", "guideline_version").get(pk=review.pk)
        assert review_payload(stored) == ReviewOutputSerializer(stored).data


# ---- the whole request ----------------------------------------------------------------------


def test_submit_then_next_writes_everything_in_few_statements(project, personas, api_for):
    """One decision with claim_next: the review, its revision, its audit event, the outcome
    (k = 1) and the next lease, in a fixed, small number of statements."""
    first = item_add(project)
    second = item_add(project)
    api = api_for(personas["expert"])
    claim = api.post(f"/api/v1/projects/{project.slug}/queue/claim/").json()
    assert claim["item"]["id"] == first.pk
    with CaptureQueriesContext(connection) as queries:
        response = submit(
            api, first, verdict="accept", claim_next=True, idempotency_key=uuid.uuid4().hex
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["next"]["item"]["id"] == second.pk
    review = Review.objects.get()
    assert ReviewRevision.objects.filter(review=review, number=1).exists()
    assert AuditEvent.objects.filter(review=review, action=AuditAction.REVIEW_SUBMITTED).exists()
    outcome = ItemOutcome.objects.get(item=first)
    assert (outcome.outcome, outcome.source, outcome.review_count) == ("accepted", "unanimous", 1)
    assert Assignment.objects.get(item=second, expert=personas["expert"]).state == "leased"
    statements = [q["sql"] for q in queries.captured_queries]
    # token + access + context, lock + assignments + write + review (with its outcome),
    # claim + assignments + write, the next item's outputs; plus savepoints (the test's
    # transaction stands in for BEGIN/COMMIT).
    work = [s for s in statements if s and "SAVEPOINT" not in s]
    assert len(work) == 11, "\n".join(work)


def test_a_retry_with_the_same_key_gets_the_same_review_and_the_same_next_item(
    project, personas, api_for
):
    first = item_add(project)
    item_add(project)
    item_add(project)
    api = api_for(personas["expert"])
    api.post(f"/api/v1/projects/{project.slug}/queue/claim/")
    once = submit(api, first, verdict="accept", claim_next=True, idempotency_key="same")
    again = submit(api, first, verdict="accept", claim_next=True, idempotency_key="same")
    assert once.status_code == 201 and again.status_code == 200
    assert once.json()["review"] == again.json()["review"]
    # The retry hands back the lease the first answer gave, not a third item.
    assert again.json()["next"]["item"]["id"] == once.json()["next"]["item"]["id"]
    assert Assignment.objects.filter(expert=personas["expert"], state="leased").count() == 1


def test_claim_after_a_decision_still_returns_a_lease_claimed_meanwhile(project, personas):
    """after_decision skips looking for the expert's lease; a lease a concurrent request
    claimed meanwhile trips the one-lease constraint and is handed back, not doubled."""
    item_add(project)
    item_add(project)
    expert = personas["expert"]
    held = queue_claim_next(project=project, expert=expert)
    again = queue_claim_next(project=project, expert=expert, after_decision=True)
    assert again.item.pk == held.item.pk
    assert Assignment.objects.filter(expert=expert, state=AssignmentState.LEASED).count() == 1


def test_k2_outcome_is_written_with_the_completing_review(project, personas, decide):
    project_settings_update(project=project, overlap=2)
    colleague = UserFactory(username="carl")
    membership_add(project, colleague, "expert")
    item = item_add(project)
    decide(project, personas["expert"], "accept")
    assert not ItemOutcome.objects.exists()
    decide(project, colleague, "correct", corrected_output="Paris!")
    outcome = ItemOutcome.objects.get(item=item)
    assert (outcome.outcome, outcome.final_text, outcome.review_count) == (
        "accepted",
        "Paris!",
        2,
    )


# ---- prepared statements ----------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_hot_cursor_prepares_on_the_server_and_keeps_djangos_error_types(project, personas):
    item = item_add(project)
    with hot_cursor() as cursor:
        cursor.execute("SELECT id FROM curation_item WHERE id = %s", [item.pk])
        assert cursor.fetchone() == (item.pk,)
        raw = connection.connection
        assert len(raw._prepared._names) >= 1  # psycopg kept it as a prepared statement
    with pytest.raises(IntegrityError), transaction.atomic(), hot_cursor() as cursor:
        cursor.execute(
            "INSERT INTO curation_item (id, project_id, external_id, prompt, metadata, priority,"
            " status, review_count, held_slots, source, created_at)"
            " SELECT id, project_id, external_id, prompt, metadata, priority, status,"
            " review_count, held_slots, source, created_at FROM curation_item WHERE id = %s",
            [item.pk],
        )
    # Django's own cursors still bind on the client and prepare nothing.
    with connection.cursor() as cursor:
        before = len(connection.connection._prepared._names)
        cursor.execute("SELECT %s::int", [json.loads("1")])
        assert len(connection.connection._prepared._names) == before


def test_review_submit_works_with_prepared_statements_off(project, personas, settings):
    settings.REDLINE_DB_PREPARED_STATEMENTS = False
    item = item_add(project)
    claim = queue_claim_next(project=project, expert=personas["expert"])
    result = review_submit(item=claim.item, expert=personas["expert"], verdict="accept")
    assert result.created and result.review.item_id == item.pk
