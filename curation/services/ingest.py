"""Ingestion from production: what a production model said, kept for monitoring and sampled
into the review queue.

``production_outputs_ingest`` takes up to ``MAX_RECORDS`` records per call:

1. **Validate every record** before writing anything. Prompt, messages, output, model and
   metadata follow the import contract (``docs/imports.md``) and are checked by the import's
   own validator (``curation.services.imports._validate``), so the two entry points accept and
   refuse the same text with the same messages; ``client_id``, ``adapter`` and ``confidence``
   are checked here. Each problem is ``{index, field, message}`` (``index`` counts from 0 in
   the request's ``records``). One bad record refuses the whole request.
2. **Idempotent per client id.** ``(project, client_id)`` is unique; a record whose id is
   already stored is skipped and counted, never duplicated or changed. Two requests for the
   same project run one after the other (the project row is locked ``FOR NO KEY UPDATE``,
   which does not block reviews or imports: their foreign-key checks take ``KEY SHARE``).
3. **Keep every new record** (``ProductionOutput``) and **sample** the project's
   ``ingest_sample_fraction`` of them into the queue. Whether a record is sampled depends on
   nothing but a hash of (project id, client id): a retried or re-split request samples the
   same records, and the sample is an unbiased share of production traffic, so the review
   rates measured on it estimate the production model's (the monitoring relies on this).
   With ``ingest_low_confidence_first`` on, a sampled record's confidence sets its queue
   priority (``round((1 - confidence) * 1000)``: the least confident are reviewed first);
   records without a score keep priority 0.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from curation.models import Candidate, Item, ProductionOutput, Project

# The import's validator, reused so that both entry points share one contract.
from curation.services.imports import (
    MAX_MODEL_NAME,
    MAX_REPORTED_ERRORS,
    _Errors,
    _model_name,
    _text,
    _type_name,
    _validate,
)

MAX_RECORDS = 1000
MAX_CLIENT_ID = 200  # ProductionOutput.client_id; the item's external_id adds the prefix
SOURCE = "production"  # Item.source of sampled records
EXTERNAL_ID_PREFIX = "production:"
PRIORITY_SCALE = 1000  # priority = round((1 - confidence) * PRIORITY_SCALE)


class IngestRejected(Exception):
    """The request had bad records; nothing was stored. ``errors`` holds the first
    ``MAX_REPORTED_ERRORS`` problems (``{index, field, message}``), ``count`` all of them."""

    def __init__(self, errors: list[dict[str, Any]], count: int) -> None:
        self.errors, self.count = errors, count
        problems = "1 problem" if count == 1 else f"{count:,} problems"
        super().__init__(f"{problems} found; nothing was stored.")


@dataclass
class IngestResult:
    received: int  # records in the request
    created: int  # new records stored
    duplicates: int  # records whose client_id was already stored: skipped
    sampled: int  # new records that became queue items
    sampled_client_ids: list[str] = field(default_factory=list)


@dataclass
class _Record:
    index: int
    client_id: str
    prompt: str
    messages: list | None
    output: str
    model: str
    adapter: str
    confidence: float | None
    metadata: dict


def model_version_label(model: str, adapter: str) -> str:
    """The name monitoring groups a record's reviews under: ``model``, or ``model+adapter``
    when an adapter produced it (the label stored as the queue item's candidate model)."""
    return "+".join(part for part in (model, adapter) if part)


def sample_point(*, project_id: int, client_id: str) -> float:
    """A number in [0, 1) fixed by (project, client id): the record is sampled when it is
    below the project's fraction. SHA-256, so it is the same in every process and release."""
    digest = hashlib.sha256(f"{project_id}\x00{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def confidence_priority(confidence: float | None) -> int:
    """Queue priority of a sampled record under low-confidence-first: 0..1000, higher for
    lower confidence; 0 without a score."""
    if confidence is None:
        return 0
    return round((1 - confidence) * PRIORITY_SCALE)


def _client_id(value: Any, index: int, errors: _Errors) -> str | None:
    if value is None:
        errors.add(index, "client_id", "Missing client_id.")
        return None
    if type(value) is int:
        value = str(value)
    value = _text(value, index, "client_id", errors)
    if value is not None and len(value) > MAX_CLIENT_ID:
        errors.add(index, "client_id", f"Longer than {MAX_CLIENT_ID} characters.")
        return None
    return value


def _confidence(value: Any, index: int, errors: _Errors) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float):
        errors.add(index, "confidence", f"Must be a number from 0 to 1, got {_type_name(value)}.")
        return None
    if not math.isfinite(value) or not 0 <= value <= 1:
        errors.add(index, "confidence", f"Must be a number from 0 to 1, got {value!r}.")
        return None
    return float(value)


# The import validator offers candidates; a production record has exactly one output.
_MESSAGES = {"Missing output or candidates: give one of them.": "Missing output."}


def _validate_record(obj: Any, index: int, errors: _Errors) -> _Record | None:
    if type(obj) is not dict:
        errors.add(index, "", f"Expected a JSON object, got {_type_name(obj)}.")
        return None
    before = errors.count
    client_id = _client_id(obj.get("client_id"), index, errors)
    shaped = {
        # A stand-in that always passes: the client id was checked above.
        "external_id": "-",
        **{
            key: obj[key]
            for key in ("prompt", "messages", "output", "model", "metadata")
            if key in obj
        },
    }
    found = _Errors()
    row = _validate(shaped, index, found)
    for problem in found.first:
        errors.add(index, problem["field"], _MESSAGES.get(problem["message"], problem["message"]))
    errors.count += found.count - len(found.first)
    if "candidates" in obj:
        errors.add(index, "candidates", "A production record has one output: give output.")
    adapter = _model_name(obj.get("adapter"), index, "adapter", errors)
    confidence = _confidence(obj.get("confidence"), index, errors)
    if errors.count != before or row is None or client_id is None:
        return None
    _, _, prompt, messages_json, metadata_json, _, candidates_json = row
    ((output, model),) = json.loads(candidates_json)
    if len(model_version_label(model, adapter)) > MAX_MODEL_NAME:
        errors.add(
            index,
            "adapter",
            f"model and adapter together are longer than {MAX_MODEL_NAME} characters.",
        )
        return None
    return _Record(
        index=index,
        client_id=client_id,
        prompt=prompt,
        messages=json.loads(messages_json) if messages_json is not None else None,
        output=output,
        model=model,
        adapter=adapter,
        confidence=confidence,
        metadata=json.loads(metadata_json),
    )


def production_outputs_validate(*, records: Any) -> list[_Record]:
    """Check a request's records; return them cleaned or raise ``IngestRejected`` (bad
    records) or ``ValidationError`` (the list itself is wrong: not a list, empty, too long)."""
    if not isinstance(records, list):
        raise ValidationError({"records": f"Must be a list of records, got {_type_name(records)}."})
    if not records:
        raise ValidationError({"records": "Give at least one record."})
    if len(records) > MAX_RECORDS:
        raise ValidationError(
            {"records": f"At most {MAX_RECORDS:,} records per request (got {len(records):,})."}
        )
    errors = _Errors()
    clean: list[_Record] = []
    first_at: dict[str, int] = {}
    for index, obj in enumerate(records):
        record = _validate_record(obj, index, errors)
        if record is None:
            continue
        if record.client_id in first_at:
            errors.add(
                index,
                "client_id",
                f"Duplicate client_id {record.client_id!r} (first at index "
                f"{first_at[record.client_id]}).",
            )
            continue
        first_at[record.client_id] = index
        clean.append(record)
    if errors:
        reported = [
            {"index": e["line"], "field": e["field"], "message": e["message"]}
            for e in errors.first[:MAX_REPORTED_ERRORS]
        ]
        raise IngestRejected(reported, errors.count)
    return clean


def production_outputs_ingest(*, project: Project, records: Any, now=None) -> IngestResult:
    """Store what a production model said and sample the project's fraction into its queue.

    ``records``: a list of at most ``MAX_RECORDS`` objects ``{client_id, prompt | messages,
    output, model?, adapter?, confidence?, metadata?}`` (see docs/monitoring.md). All or
    nothing: raises ``IngestRejected`` naming every bad record's index and field (nothing
    stored), or ``ValidationError`` when ``records`` is not such a list. Records whose
    client_id the project already holds are skipped and counted (``duplicates``). The caller
    has checked that the actor manages the project. Opens its own transaction and locks the
    project row ``FOR NO KEY UPDATE`` (requests for one project run one at a time; reviews and
    imports are not blocked).
    """
    clean = production_outputs_validate(records=records)
    now = now or timezone.now()
    with transaction.atomic():
        locked = (
            Project.objects.select_for_update(no_key=True)
            .only("pk", "ingest_sample_fraction", "ingest_low_confidence_first")
            .get(pk=project.pk)
        )
        stored = set(
            ProductionOutput.objects.filter(
                project_id=locked.pk, client_id__in=[r.client_id for r in clean]
            ).values_list("client_id", flat=True)
        )
        new = [r for r in clean if r.client_id not in stored]
        fraction = locked.ingest_sample_fraction
        sampled = [
            r for r in new if sample_point(project_id=locked.pk, client_id=r.client_id) < fraction
        ]
        items = _items_create(project=locked, records=sampled)
        ProductionOutput.objects.bulk_create(
            ProductionOutput(
                project_id=locked.pk,
                client_id=r.client_id,
                prompt=r.prompt,
                messages=r.messages,
                output=r.output,
                model=r.model,
                adapter=r.adapter,
                confidence=r.confidence,
                metadata=r.metadata,
                received_at=now,
                sampled=r.client_id in items,
                item_id=items.get(r.client_id),
            )
            for r in new
        )
    return IngestResult(
        received=len(clean),
        created=len(new),
        duplicates=len(clean) - len(new),
        sampled=len(sampled),
        sampled_client_ids=[r.client_id for r in sampled],
    )


def _items_create(*, project: Project, records: list[_Record]) -> dict[str, int]:
    """Queue items for sampled records, in request order; returns {client_id: item id}.
    An item that already holds a record's external id (``production:<client_id>``) is
    linked rather than duplicated. Call inside the ingest's transaction."""
    if not records:
        return {}
    external = {r.client_id: EXTERNAL_ID_PREFIX + r.client_id for r in records}
    existing = dict(
        Item.objects.filter(project=project, external_id__in=external.values()).values_list(
            "external_id", "id"
        )
    )
    by_priority = project.ingest_low_confidence_first
    fresh = [r for r in records if external[r.client_id] not in existing]
    created = Item.objects.bulk_create(
        Item(
            project=project,
            external_id=external[r.client_id],
            prompt="" if r.messages else r.prompt,
            messages=r.messages,
            metadata=r.metadata,
            priority=confidence_priority(r.confidence) if by_priority else 0,
            source=SOURCE,
        )
        for r in fresh
    )
    Candidate.objects.bulk_create(
        Candidate(
            item=item, position=0, output=r.output, model=model_version_label(r.model, r.adapter)
        )
        for item, r in zip(created, fresh, strict=True)
    )
    ids = {
        r.client_id: existing[external[r.client_id]]
        for r in records
        if external[r.client_id] in existing
    }
    ids.update({r.client_id: item.pk for item, r in zip(created, fresh, strict=True)})
    return ids
