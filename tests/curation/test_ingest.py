"""Ingestion from production: every record kept, a stable fraction sampled into the queue,
idempotent per client id, all or nothing with errors naming index and field, at most 1,000
records a request. Service and API (persona matrix, methods, CSRF)."""

from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from curation.models import Candidate, Item, ProductionOutput, Project
from curation.services.ingest import (
    MAX_RECORDS,
    IngestRejected,
    confidence_priority,
    production_outputs_ingest,
    sample_point,
)
from curation.services.queue import queue_claim_next
from curation.services.settings import project_settings_update
from tests.factories import item_add

pytestmark = pytest.mark.django_db


def record(n, **fields):
    return {
        "client_id": f"req-{n}",
        "prompt": f"Question {n}?",
        "output": f"Answer {n}.",
        "model": "support-gpt",
        **fields,
    }


def expected_sample(project, client_ids, fraction):
    return {c for c in client_ids if sample_point(project_id=project.pk, client_id=c) < fraction}


def set_fraction(project, fraction, **more):
    project_settings_update(project=project, ingest_sample_fraction=fraction, **more)
    project.refresh_from_db()


# ---- Keeping and sampling -------------------------------------------------------------------


def test_every_record_is_kept_and_the_hash_chosen_share_becomes_queue_items(project):
    set_fraction(project, 0.3)
    records = [record(n, adapter="lora-7" if n % 2 else None) for n in range(300)]
    for r in records:
        if r["adapter"] is None:
            del r["adapter"]
    result = production_outputs_ingest(project=project, records=records)

    wanted = expected_sample(project, [r["client_id"] for r in records], 0.3)
    assert (result.received, result.created, result.duplicates) == (300, 300, 0)
    assert set(result.sampled_client_ids) == wanted and result.sampled == len(wanted)
    assert 60 < len(wanted) < 120  # about 30% of 300
    assert ProductionOutput.objects.filter(project=project).count() == 300
    sampled = ProductionOutput.objects.filter(project=project, sampled=True)
    assert set(sampled.values_list("client_id", flat=True)) == wanted
    assert not sampled.filter(item__isnull=True).exists()
    assert not ProductionOutput.objects.filter(sampled=False, item__isnull=False).exists()

    items = Item.objects.filter(project=project)
    assert items.count() == len(wanted)
    assert set(items.values_list("source", flat=True)) == {"production"}
    assert set(items.values_list("external_id", flat=True)) == {f"production:{c}" for c in wanted}
    some = sampled.select_related("item").first()
    assert some.item.prompt == some.prompt and some.item.status == "open"
    candidate = Candidate.objects.get(item=some.item)
    n = int(some.client_id.split("-")[1])
    assert candidate.output == f"Answer {n}."
    assert candidate.model == ("support-gpt+lora-7" if n % 2 else "support-gpt")


def test_the_same_request_twice_stores_nothing_new(project, api_for, personas):
    set_fraction(project, 0.5)
    body = {"records": [record(n) for n in range(50)]}
    api = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/outputs/"

    first = api.post(url, body, format="json")
    assert first.status_code == 201
    items_before = set(Item.objects.values_list("pk", flat=True))
    second = api.post(url, body, format="json")

    assert second.status_code == 200
    assert second.json() == {
        "received": 50,
        "created": 0,
        "duplicates": 50,
        "sampled": 0,
        "sampled_client_ids": [],
    }
    assert ProductionOutput.objects.filter(project=project).count() == 50
    assert set(Item.objects.values_list("pk", flat=True)) == items_before


def test_a_retry_mixing_old_and_new_records_adds_only_the_new(project):
    set_fraction(project, 1.0)
    production_outputs_ingest(project=project, records=[record(n) for n in range(5)])
    result = production_outputs_ingest(project=project, records=[record(n) for n in range(3, 8)])
    assert (result.created, result.duplicates, result.sampled) == (3, 2, 3)
    assert ProductionOutput.objects.filter(project=project).count() == 8
    assert Item.objects.filter(project=project).count() == 8


def test_a_stored_record_is_never_changed_by_a_repeat_with_other_text(project):
    production_outputs_ingest(project=project, records=[record(1)])
    production_outputs_ingest(project=project, records=[record(1, output="Something else.")])
    assert ProductionOutput.objects.get(project=project).output == "Answer 1."


def test_the_sampled_set_does_not_depend_on_how_records_are_split_into_requests(project):
    set_fraction(project, 0.25)
    ids = [f"req-{n}" for n in range(120)]
    wanted = expected_sample(project, ids, 0.25)
    # a failed request (one bad record) stores nothing; its retry, split in three, samples
    # exactly the records the hash picks
    bad = [record(n) for n in range(120)] + [{"client_id": "broken"}]
    with pytest.raises(IngestRejected):
        production_outputs_ingest(project=project, records=bad)
    assert not ProductionOutput.objects.exists()
    got = set()
    for chunk in (range(0, 7), range(7, 80), range(80, 120)):
        got |= set(
            production_outputs_ingest(
                project=project, records=[record(n) for n in chunk]
            ).sampled_client_ids
        )
    assert got == wanted
    assert (
        set(ProductionOutput.objects.filter(sampled=True).values_list("client_id", flat=True))
        == wanted
    )


def test_sample_points_are_fixed_numbers_in_the_unit_interval():
    assert sample_point(project_id=1, client_id="a") == sample_point(project_id=1, client_id="a")
    assert sample_point(project_id=1, client_id="a") != sample_point(project_id=2, client_id="a")
    points = [sample_point(project_id=1, client_id=str(n)) for n in range(2000)]
    assert all(0 <= p < 1 for p in points)
    assert 0.45 < sum(points) / len(points) < 0.55


@pytest.mark.parametrize(("fraction", "sampled"), [(0.0, 0), (1.0, 40)])
def test_fraction_zero_samples_nothing_and_one_samples_everything(project, fraction, sampled):
    set_fraction(project, fraction)
    result = production_outputs_ingest(project=project, records=[record(n) for n in range(40)])
    assert result.sampled == sampled == Item.objects.filter(project=project).count()
    assert ProductionOutput.objects.filter(project=project).count() == 40


def test_least_confident_records_are_reviewed_first(project, personas):
    set_fraction(project, 1.0)
    records = [
        record(1, confidence=0.9),
        record(2, confidence=0.05),
        record(3),
        record(4, confidence=0.5),
        record(5, confidence=1),
    ]
    production_outputs_ingest(project=project, records=records)
    priorities = dict(Item.objects.filter(project=project).values_list("external_id", "priority"))
    assert priorities == {
        "production:req-1": 100,
        "production:req-2": 950,
        "production:req-3": 0,
        "production:req-4": 500,
        "production:req-5": 0,
    }
    assert confidence_priority(0.05) == 950
    claim = queue_claim_next(project=project, expert=personas["expert"])
    assert claim.item.external_id == "production:req-2"
    assert ProductionOutput.objects.get(client_id="req-2").confidence == 0.05


def test_with_low_confidence_first_off_scores_do_not_order_the_queue(project):
    set_fraction(project, 1.0, ingest_low_confidence_first=False)
    production_outputs_ingest(project=project, records=[record(1, confidence=0.1)])
    assert Item.objects.get(project=project).priority == 0
    assert ProductionOutput.objects.get(project=project).confidence == 0.1


def test_chat_records_become_chat_items_with_their_metadata(project):
    set_fraction(project, 1.0)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my parcel?"},
    ]
    production_outputs_ingest(
        project=project,
        records=[
            {
                "client_id": 42,
                "messages": messages,
                "output": "On its way.",
                "metadata": {"channel": "chat", "latency_ms": 812},
            }
        ],
    )
    stored = ProductionOutput.objects.get(project=project)
    assert stored.client_id == "42" and stored.messages == messages and stored.prompt == ""
    assert stored.metadata == {"channel": "chat", "latency_ms": 812}
    assert stored.model == "" and stored.adapter == "" and stored.confidence is None
    assert (stored.item.messages, stored.item.metadata) == (messages, stored.metadata)


def test_an_item_already_holding_the_external_id_is_linked_not_duplicated(project):
    set_fraction(project, 1.0)
    existing = item_add(project, external_id="production:req-1")
    production_outputs_ingest(project=project, records=[record(1)])
    assert ProductionOutput.objects.get(project=project).item == existing
    assert Item.objects.filter(project=project).count() == 1


# ---- Validation -----------------------------------------------------------------------------


def test_bad_records_are_named_by_index_and_field_and_nothing_is_stored(project):
    records = [
        record(0),
        {"prompt": "Hi?", "output": "Hello."},
        record(2, confidence=1.5),
        record(3, messages=[{"role": "robot", "content": "x"}], prompt=None),
        {"client_id": "req-4", "prompt": "Hi?"},
        record(5, candidates=[{"output": "a"}]),
        record(0),
        "not an object",
        record(8, adapter="a" * 201),
        record(9, confidence=True),
        record(10, confidence=float("nan")),
        record(11, metadata=["not", "an", "object"]),
        record(12, model=7),
        record(13, output="   "),
        record(14, client_id="x" * 201),
        record(15, model="m" * 150, adapter="a" * 60),
        record(16, client_id="nul\x00id"),
        record(17, client_id=["a"]),
    ]
    del records[3]["prompt"]
    with pytest.raises(IngestRejected) as caught:
        production_outputs_ingest(project=project, records=records)
    problems = {(e["index"], e["field"]): e["message"] for e in caught.value.errors}
    assert problems == {
        (1, "client_id"): "Missing client_id.",
        (2, "confidence"): "Must be a number from 0 to 1, got 1.5.",
        (3, "messages[0].role"): "Unknown role 'robot'; use one of system, user, assistant.",
        (4, "output"): "Missing output.",
        (5, "candidates"): "A production record has one output: give output.",
        (6, "client_id"): "Duplicate client_id 'req-0' (first at index 0).",
        (7, ""): "Expected a JSON object, got a string.",
        (8, "adapter"): "Longer than 200 characters.",
        (9, "confidence"): "Must be a number from 0 to 1, got a boolean.",
        (10, "confidence"): "Must be a number from 0 to 1, got nan.",
        (11, "metadata"): "Must be an object, got an array.",
        (12, "model"): "Must be a string, got a number.",
        (13, "output"): "Must not be empty.",
        (14, "client_id"): "Longer than 200 characters.",
        (15, "adapter"): "model and adapter together are longer than 200 characters.",
        (16, "client_id"): "Contains a NUL character or an unpaired surrogate.",
        (17, "client_id"): "Must be a string, got an array.",
    }
    assert caught.value.count == 17
    assert str(caught.value) == "17 problems found; nothing was stored."
    assert not ProductionOutput.objects.exists()
    assert not Item.objects.exists()


def test_at_most_a_thousand_records_a_request(project):
    too_many = [record(n) for n in range(MAX_RECORDS + 1)]
    with pytest.raises(ValidationError) as caught:
        production_outputs_ingest(project=project, records=too_many)
    assert caught.value.message_dict == {
        "records": ["At most 1,000 records per request (got 1,001)."]
    }
    assert not ProductionOutput.objects.exists()
    result = production_outputs_ingest(project=project, records=too_many[:MAX_RECORDS])
    assert result.created == MAX_RECORDS


@pytest.mark.parametrize(
    ("records", "message"),
    [([], "Give at least one record."), ({"client_id": "a"}, "Must be a list of records")],
)
def test_records_must_be_a_non_empty_list(project, records, message):
    with pytest.raises(ValidationError) as caught:
        production_outputs_ingest(project=project, records=records)
    assert caught.value.message_dict["records"][0].startswith(message)


# ---- Settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, math.nan, math.inf])
def test_the_sampling_fraction_must_be_a_number_from_zero_to_one(project, bad):
    with pytest.raises(ValidationError) as caught:
        project_settings_update(project=project, ingest_sample_fraction=bad)
    assert "from 0 to 1" in caught.value.message_dict["ingest_sample_fraction"][0]
    assert Project.objects.get(pk=project.pk).ingest_sample_fraction == 0.1


def test_the_settings_api_and_page_set_the_ingestion_settings(
    project, personas, api_for, client_for
):
    url = f"/api/v1/projects/{project.slug}/settings/"
    response = api_for(personas["manager"]).patch(
        url, {"ingest_sample_fraction": 0.25, "ingest_low_confidence_first": False}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["ingest_sample_fraction"] == 0.25
    assert response.json()["ingest_low_confidence_first"] is False
    bad = api_for(personas["manager"]).patch(url, {"ingest_sample_fraction": 2}, format="json")
    assert bad.status_code == 400 and "ingest_sample_fraction" in bad.json()

    page = reverse("curation:project_settings", args=[project.slug])
    c = client_for(personas["manager"])
    assert b"Production outputs sampled into the queue" in c.get(page).content
    post = {
        "review_modes": ["correct"],
        "label_schema": "",
        "overlap": "1",
        "lease_minutes": "10",
        "outcome_rule": "unanimous",
        "ingest_sample_percent": "12.5",
        "ingest_low_confidence_first": "on",
    }
    assert c.post(page, post).status_code == 302
    project.refresh_from_db()
    assert (project.ingest_sample_fraction, project.ingest_low_confidence_first) == (0.125, True)
    refused = c.post(page, {**post, "ingest_sample_percent": "150"})
    assert refused.status_code == 400
    assert Project.objects.get(pk=project.pk).ingest_sample_fraction == 0.125


# ---- API ------------------------------------------------------------------------------------


def outputs_url(project):
    return f"/api/v1/projects/{project.slug}/outputs/"


@pytest.mark.parametrize(
    ("persona", "status"),
    [("anonymous", 401), ("outsider", 404), ("expert", 403), ("manager", 201), ("admin", 201)],
)
def test_posting_outputs_by_persona(project, personas, api_for, persona, status):
    api = APIClient() if persona == "anonymous" else api_for(personas[persona])
    response = api.post(outputs_url(project), {"records": [record(1)]}, format="json")
    assert response.status_code == status
    assert ProductionOutput.objects.filter(project=project).exists() == (status == 201)


def test_the_outputs_endpoint_takes_only_post(project, personas, api_for):
    api = api_for(personas["manager"])
    for method in (api.get, api.put, api.patch, api.delete):
        assert method(outputs_url(project), {}, format="json").status_code == 405


def test_session_clients_must_send_the_csrf_token(project, personas, client_for):
    c = client_for(personas["manager"], enforce_csrf=True)
    response = c.post(
        outputs_url(project), {"records": [record(1)]}, content_type="application/json"
    )
    assert response.status_code == 403
    assert not ProductionOutput.objects.exists()


def test_the_api_answers_bad_records_with_index_and_field(project, personas, api_for):
    response = api_for(personas["manager"]).post(
        outputs_url(project),
        {"records": [record(0), record(1, confidence="high")]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "1 problem found; nothing was stored.",
        "error_count": 1,
        "errors": [
            {
                "index": 1,
                "field": "confidence",
                "message": "Must be a number from 0 to 1, got a string.",
            }
        ],
    }
    assert not ProductionOutput.objects.exists()


def test_the_api_refuses_more_than_a_thousand_records(project, personas, api_for):
    body = {"records": [record(n) for n in range(MAX_RECORDS + 1)]}
    response = api_for(personas["manager"]).post(outputs_url(project), body, format="json")
    assert response.status_code == 400
    assert response.json() == {"records": ["At most 1,000 records per request (got 1,001)."]}
    assert not ProductionOutput.objects.exists()


def test_a_body_without_records_is_refused(project, personas, api_for):
    response = api_for(personas["manager"]).post(outputs_url(project), {"x": 1}, format="json")
    assert response.status_code == 400 and "records" in response.json()


def test_concurrent_retries_of_one_request_store_each_record_once(transactional_db, project):
    import threading

    from django.db import connection

    set_fraction(project, 0.5)
    records = [record(n) for n in range(200)]
    barrier = threading.Barrier(3)
    results, failures = [], []

    def run():
        try:
            barrier.wait()
            results.append(production_outputs_ingest(project=project, records=records))
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert sorted(r.created for r in results) == [0, 0, 200]
    assert sum(r.duplicates for r in results) == 400
    wanted = expected_sample(project, [r["client_id"] for r in records], 0.5)
    assert ProductionOutput.objects.filter(project=project).count() == 200
    assert set(Item.objects.filter(project=project).values_list("external_id", flat=True)) == {
        f"production:{c}" for c in wanted
    }
