"""Turning k reviews into an item's final decision, and adjudication.

Each counted review falls in a *class*:

- ``reject`` for a rejection;
- on a comparison (the review states a preference): ``pref:<candidate id>`` or ``pref:tie``;
- otherwise ``accept:<candidate id>`` (accept and correct agree that the output is usable).

Under the ``unanimous`` rule every review must share a class; under ``majority`` one class
needs more than half of them. Otherwise the item needs adjudication. A winning usable class
whose reviews carry more than one distinct correction also needs adjudication (a manager
picks or writes the final text); exactly one correction becomes the final text, none means
the candidate's own output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from curation.models import Candidate, Item, OutcomeRule, Project
from feedback.models import (
    AuditAction,
    AuditEvent,
    ItemOutcome,
    Outcome,
    OutcomeSource,
    Review,
    Verdict,
)


def review_class(review: Review) -> str:
    """The class a counted review votes for (see the module docstring)."""
    if review.verdict == Verdict.REJECT:
        return "reject"
    if review.tie:
        return "pref:tie"
    if review.preferred_candidate_id:
        return f"pref:{review.preferred_candidate_id}"
    return f"accept:{review.candidate_id}"


@dataclass(frozen=True)
class OutcomeDecision:
    outcome: str
    source: str
    agreement: float
    review_count: int
    final_candidate_id: int | None = None
    final_text: str = ""
    preferred_candidate_id: int | None = None
    tie: bool = False


def outcome_decide(
    *, reviews: list[Review], k: int, rule: str, candidates: dict[int, Candidate]
) -> OutcomeDecision | None:
    """The outcome ``reviews`` (an item's reviews, any verdicts) lead to, or None while the
    item has fewer than ``k`` counted reviews. Pure: reads nothing from the database."""
    counted = [r for r in reviews if r.verdict != Verdict.SKIP]
    n = len(counted)
    if n < k or n == 0:
        return None
    votes = Counter(review_class(r) for r in counted)
    (top, top_count), *rest = votes.most_common()
    if len(votes) == 1:
        source = OutcomeSource.UNANIMOUS
    elif rule == OutcomeRule.MAJORITY and top_count * 2 > n:
        source = OutcomeSource.MAJORITY
    else:
        return OutcomeDecision(
            outcome=Outcome.NEEDS_ADJUDICATION,
            source=OutcomeSource.MAJORITY
            if rule == OutcomeRule.MAJORITY
            else OutcomeSource.UNANIMOUS,
            agreement=top_count / n,
            review_count=n,
        )
    agreement = top_count / n
    if top == "reject":
        return OutcomeDecision(
            outcome=Outcome.REJECTED, source=source, agreement=agreement, review_count=n
        )
    kind, _, value = top.partition(":")
    tie = kind == "pref" and value == "tie"
    chosen_id = None if tie else int(value)
    winners = [r for r in counted if review_class(r) == top]
    corrections = {r.corrected_output for r in winners if r.verdict == Verdict.CORRECT}
    if len(corrections) > 1:
        return OutcomeDecision(
            outcome=Outcome.NEEDS_ADJUDICATION,
            source=source,
            agreement=agreement,
            review_count=n,
            preferred_candidate_id=chosen_id if kind == "pref" else None,
            tie=tie,
        )
    if tie:
        # Both outputs equally good: a correction (of the output the expert had in front of
        # them) is the final text; otherwise there is no single final text.
        corrected = next((r for r in winners if r.verdict == Verdict.CORRECT), None)
        return OutcomeDecision(
            outcome=Outcome.ACCEPTED,
            source=source,
            agreement=agreement,
            review_count=n,
            final_candidate_id=corrected.candidate_id if corrected else None,
            final_text=corrected.corrected_output if corrected else "",
            tie=True,
        )
    original = candidates.get(chosen_id)
    final_text = corrections.pop() if corrections else (original.output if original else "")
    return OutcomeDecision(
        outcome=Outcome.ACCEPTED,
        source=source,
        agreement=agreement,
        review_count=n,
        final_candidate_id=chosen_id,
        final_text=final_text,
        preferred_candidate_id=chosen_id if kind == "pref" else None,
    )


_OUTCOME = ItemOutcome._meta.db_table
_OUTCOME_COLUMNS = (
    "project_id",
    "outcome",
    "source",
    "final_candidate_id",
    "final_text",
    "preferred_candidate_id",
    "tie",
    "agreement",
    "review_count",
    "decided_by_id",
    "note",
)


def outcome_upsert_sql(
    item_id: int, project_id: int, decision: OutcomeDecision, now
) -> tuple[str, list]:
    """The statement that inserts or updates the item's outcome, never over an adjudication,
    and leaving ``decided_at`` alone when nothing changed. (It runs on every completing
    submit; on PostgreSQL the review's insert carries it as a CTE.)"""
    values = [
        project_id,
        decision.outcome,
        decision.source,
        decision.final_candidate_id,
        decision.final_text,
        decision.preferred_candidate_id,
        decision.tie,
        decision.agreement,
        decision.review_count,
        None,
        "",
    ]
    distinct = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    columns = ", ".join(_OUTCOME_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*_OUTCOME_COLUMNS, "decided_at"))
    changed = " OR ".join(f"{_OUTCOME}.{c} {distinct} excluded.{c}" for c in _OUTCOME_COLUMNS)
    sql = (
        f"INSERT INTO {_OUTCOME} (item_id, {columns}, decided_at)"  # noqa: S608 (names only)
        f" VALUES (%s, {', '.join(['%s'] * len(values))}, %s)"
        f" ON CONFLICT (item_id) DO UPDATE SET {updates}"
        f" WHERE {_OUTCOME}.source <> 'adjudicated' AND ({changed})"
    )
    return sql, [item_id, *values, connection.ops.adapt_datetimefield_value(now)]


def _outcome_upsert(item_id: int, project_id: int, decision: OutcomeDecision, now) -> None:
    sql, params = outcome_upsert_sql(item_id, project_id, decision, now)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def item_outcome_decision(
    *, project: Project, candidates: list[Candidate], reviews: list[Review]
) -> OutcomeDecision | None:
    """``outcome_decide`` with the project's k and rule (pure)."""
    return outcome_decide(
        reviews=reviews,
        k=project.overlap,
        rule=project.outcome_rule,
        candidates={c.pk: c for c in candidates},
    )


def item_outcome_refresh(
    *,
    item: Item,
    project: Project | None = None,
    now: datetime | None = None,
    candidates: list[Candidate] | None = None,
    reviews: list[Review] | None = None,
) -> None:
    """Decide (again) the outcome of ``item`` from its reviews and store it.

    Call inside ``transaction.atomic`` holding the item's row lock. A manager's adjudication
    is kept as it is; an item that no longer has k counted reviews (k was raised) loses its
    outcome until it has them again. ``candidates`` and ``reviews`` (all of the item's) save
    queries when the caller has them.
    """
    now = now or timezone.now()
    project = project or Project.objects.get(pk=item.project_id)
    if reviews is None:
        reviews = list(Review.objects.filter(item_id=item.pk))
    if candidates is None:
        candidates = list(Candidate.objects.filter(item_id=item.pk))
    decision = item_outcome_decision(project=project, candidates=candidates, reviews=reviews)
    if decision is None:
        ItemOutcome.objects.filter(item_id=item.pk).exclude(
            source=OutcomeSource.ADJUDICATED
        ).delete()
        return
    _outcome_upsert(item.pk, project.pk, decision, now)


def project_outcomes_refresh(*, project: Project) -> int:
    """Decide again every reviewed item of the project (after k or the outcome rule changed).
    Each item is locked in turn; returns how many items were looked at."""
    ids = list(
        Item.objects.filter(project=project, review_count__gt=0).values_list("pk", flat=True)
    )
    for item_id in ids:
        with transaction.atomic():
            item = Item.objects.select_for_update(no_key=True).get(pk=item_id)
            item_outcome_refresh(item=item, project=project)
    return len(ids)


def item_adjudicate(
    *,
    item: Item,
    manager,
    outcome: str,
    final_text: Any = None,
    final_candidate: Any = None,
    preferred_candidate: Any = None,
    tie: bool = False,
    note: str = "",
    now: datetime | None = None,
) -> ItemOutcome:
    """A manager's final decision on an item that has its k counted reviews.

    ``outcome`` is ``accepted`` or ``rejected``. Accepting needs the final text: written
    (``final_text``) or taken from a candidate (``final_candidate``, whose output is used
    when no text is given). For comparisons ``preferred_candidate`` or ``tie`` records which
    output won. The caller has checked that ``manager`` manages the project. Locks the item
    row; recorded with the manager's name and an audit event. Errors are keyed by field.
    """
    now = now or timezone.now()
    errors: dict[str, str] = {}
    if outcome not in (Outcome.ACCEPTED, Outcome.REJECTED):
        raise ValidationError({"outcome": "Choose accepted or rejected."})
    if not isinstance(note, str | None):
        raise ValidationError({"note": "The note must be text."})
    if final_text is not None and not isinstance(final_text, str):
        raise ValidationError({"final_text": "The final text must be text."})
    with transaction.atomic():
        item = Item.objects.select_for_update(no_key=True).get(pk=item.pk)
        project = Project.objects.get(pk=item.project_id)
        if item.review_count < project.overlap:
            raise ValidationError(
                {
                    "outcome": f"This item has {item.review_count} of {project.overlap} reviews; "
                    "it can be adjudicated once it has them all."
                }
            )
        candidates = {c.pk: c for c in Candidate.objects.filter(item_id=item.pk)}

        def candidate_id(value: Any, field: str) -> int | None:
            if value in (None, ""):
                return None
            try:
                pk = int(value.pk if isinstance(value, Candidate) else value)
            except (TypeError, ValueError):
                errors[field] = f"{value!r} is not a candidate id."
                return None
            if pk not in candidates:
                errors[field] = f"Candidate {pk} is not one of this item's outputs."
                return None
            return pk

        final_id = candidate_id(final_candidate, "final_candidate")
        preferred_id = candidate_id(preferred_candidate, "preferred_candidate")
        if tie and preferred_id:
            errors["preferred_candidate"] = "Give a preferred candidate or a tie, not both."
        text = (final_text or "").replace("\r\n", "\n")
        if outcome == Outcome.ACCEPTED:
            if not text.strip() and final_id is None:
                errors["final_text"] = "Write the final text or pick the output to keep."
            elif not text.strip():
                text = candidates[final_id].output
        elif text.strip() or final_id is not None:
            errors["final_text"] = "A rejected item has no final text."
        if errors:
            raise ValidationError(errors)
        if outcome == Outcome.REJECTED:
            final_id, text = None, ""
        reviews = [r for r in Review.objects.filter(item_id=item.pk) if r.verdict != Verdict.SKIP]
        if outcome == Outcome.REJECTED:
            final_class = "reject"
        elif tie:
            final_class = "pref:tie"
        elif preferred_id:
            final_class = f"pref:{preferred_id}"
        else:
            final_class = f"accept:{final_id}" if final_id else None
        agreement = (
            sum(review_class(r) == final_class for r in reviews) / len(reviews) if reviews else None
        )
        previous = ItemOutcome.objects.filter(item_id=item.pk).first()
        values = {
            "project_id": project.pk,
            "outcome": outcome,
            "source": OutcomeSource.ADJUDICATED,
            "agreement": agreement,
            "review_count": len(reviews),
            "final_candidate_id": final_id,
            "final_text": text,
            "preferred_candidate_id": preferred_id,
            "tie": bool(tie),
            "decided_by": manager,
            "note": (note or "").strip(),
            "decided_at": now,
        }
        result, _ = ItemOutcome.objects.update_or_create(item_id=item.pk, defaults=values)
        AuditEvent.objects.create(
            project_id=project.pk,
            actor=manager,
            action=AuditAction.ITEM_ADJUDICATED,
            item_id=item.pk,
            details={
                "outcome": outcome,
                "previous": previous.outcome if previous else None,
                "final_candidate": final_id,
                "preferred_candidate": preferred_id,
                "tie": bool(tie),
            },
            created_at=now,
        )
    return result
