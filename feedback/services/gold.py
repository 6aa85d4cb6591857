"""Gold answers: a manager states what the right decision on an item is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from curation.models import Candidate, Item, Project
from feedback.models import AuditAction, AuditEvent, GoldAnswer, Verdict
from feedback.services.reviews import labels_validate


@transaction.atomic
def gold_set(
    *,
    item: Item,
    actor,
    verdict: str,
    preferred_candidate: Any = None,
    tie: bool = False,
    labels: Any = None,
    note: str = "",
    now: datetime | None = None,
) -> GoldAnswer:
    """Mark ``item`` as gold with its expected answer (replacing an earlier one).

    ``verdict`` is what the output deserves: ``accept`` (fine as it is), ``correct`` (usable
    after an edit) or ``reject``. Experts are scored on whether they saw a flaw: an expected
    ``accept`` matches an accept; an expected ``correct`` or ``reject`` matches a correct or a
    reject. Where a preference or label answers are given, those must match too. The caller
    has checked that ``actor`` manages the project. Errors are keyed by field.
    """
    now = now or timezone.now()
    project = Project.objects.get(pk=item.project_id)
    if verdict not in (Verdict.ACCEPT, Verdict.CORRECT, Verdict.REJECT):
        raise ValidationError({"verdict": "Expected verdict: accept, correct or reject."})
    candidates = set(Candidate.objects.filter(item_id=item.pk).values_list("pk", flat=True))
    preferred_id = None
    if preferred_candidate not in (None, ""):
        try:
            preferred_id = int(getattr(preferred_candidate, "pk", preferred_candidate))
        except (TypeError, ValueError):
            raise ValidationError({"preferred_candidate": "Not a candidate id."}) from None
        if preferred_id not in candidates:
            raise ValidationError(
                {"preferred_candidate": f"Candidate {preferred_id} is not one of this item's."}
            )
    if tie and preferred_id:
        raise ValidationError({"preferred_candidate": "A preferred candidate or a tie, not both."})
    if (tie or preferred_id) and len(candidates) < 2:
        raise ValidationError({"preferred_candidate": "This item has only one output."})
    clean_labels = labels_validate(schema=project.label_schema or [], labels=labels, require=False)
    gold, _ = GoldAnswer.objects.update_or_create(
        item_id=item.pk,
        defaults={
            "project_id": project.pk,
            "verdict": verdict,
            "preferred_candidate_id": preferred_id,
            "tie": bool(tie),
            "labels": clean_labels,
            "note": (note or "").strip(),
            "created_by": actor,
            "updated_at": now,
        },
    )
    AuditEvent.objects.create(
        project_id=project.pk,
        actor=actor,
        action=AuditAction.GOLD_SET,
        item_id=item.pk,
        details={"verdict": verdict, "preferred_candidate": preferred_id, "tie": bool(tie)},
        created_at=now,
    )
    return gold


@transaction.atomic
def gold_clear(*, item: Item, actor, now: datetime | None = None) -> bool:
    """Remove the item's gold answer. False when it had none."""
    deleted, _ = GoldAnswer.objects.filter(item_id=item.pk).delete()
    if deleted:
        AuditEvent.objects.create(
            project_id=item.project_id,
            actor=actor,
            action=AuditAction.GOLD_CLEARED,
            item_id=item.pk,
            created_at=now or timezone.now(),
        )
    return bool(deleted)


def gold_matches(*, gold: GoldAnswer, review) -> bool:
    """Whether a counted review agrees with the gold answer (rules in ``gold_set``)."""
    if gold.verdict == Verdict.ACCEPT:
        if review.verdict != Verdict.ACCEPT:
            return False
    elif review.verdict not in (Verdict.CORRECT, Verdict.REJECT):
        return False
    if gold.tie and not review.tie:
        return False
    if gold.preferred_candidate_id and review.preferred_candidate_id != gold.preferred_candidate_id:
        return False
    return all((review.labels or {}).get(key) == value for key, value in gold.labels.items())
