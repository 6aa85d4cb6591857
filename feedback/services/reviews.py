"""Submitting and amending reviews.

A review is written in the same transaction as the queue's bookkeeping
(``curation.services.queue.queue_record_decision``, which locks the item row), so an item can
never end up with more than k counted reviews, and a retried submit finds the first one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from curation.models import Candidate, GuidelineVersion, Item, Project, ReviewMode
from curation.services.queue import LeaseLost, queue_record_decision
from feedback.models import AuditAction, AuditEvent, Review, ReviewRevision, Verdict
from feedback.services.outcomes import (
    OutcomeDecision,
    item_outcome_decision,
    item_outcome_refresh,
    outcome_upsert_sql,
)
from redline.lib.db import hot_cursor

RATING_RANGE = (1, 5)
RATIONALE_MAX_CHARS = 20_000
CORRECTION_MAX_CHARS = 1_000_000
LABEL_TEXT_MAX_CHARS = 10_000
IDEMPOTENCY_KEY_MAX = 100
TIME_SPENT_MAX_MS = 24 * 60 * 60 * 1000

# The fields a revision snapshots, in a stable order.
DECISION_FIELDS = (
    "verdict",
    "candidate",
    "corrected_output",
    "preferred_candidate",
    "tie",
    "rating",
    "labels",
    "rationale",
)


class AlreadyDecided(Exception):
    """The expert already decided this item (with another idempotency key, or none)."""

    def __init__(self, review: Review):
        super().__init__("You already decided this item; amend that decision instead.")
        self.review = review


@dataclass(frozen=True)
class ReviewResult:
    review: Review
    created: bool  # False when an idempotent retry returned the existing review
    item: Item


def _candidates(item: Item) -> list[Candidate]:
    """The item's candidates in position order (one raw query: this runs on every submit)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, position, output, model FROM {Candidate._meta.db_table}"  # noqa: S608
            " WHERE item_id = %s ORDER BY position",
            [item.pk],
        )
        return [
            Candidate(id=pk, item_id=item.pk, position=pos, output=out, model=model)
            for pk, pos, out, model in cursor.fetchall()
        ]


def _as_id(value: Any, field: str) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, Candidate):
        return value.pk
    if isinstance(value, bool):
        raise ValidationError({field: "Must be a candidate id."})
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError({field: f"{value!r} is not a candidate id."}) from None


def labels_validate(
    *, schema: list[dict], labels: Any, require: bool
) -> dict[str, str | int | list[str]]:
    """Check label answers against the project's label schema; return them cleaned.

    Errors are keyed ``labels.<question key>``. Unknown keys are refused (a typo must not
    vanish). ``require`` makes required questions mandatory (counted verdicts in label mode).
    """
    if labels in (None, ""):
        labels = {}
    if not isinstance(labels, dict):
        raise ValidationError({"labels": "Labels must be an object of {question key: answer}."})
    errors: dict[str, str] = {}
    by_key = {q["key"]: q for q in schema}
    clean: dict[str, Any] = {}
    for key in labels:
        if key not in by_key:
            errors[f"labels.{key}"] = f"No question {key!r} in this project's label schema."
    for key, question in by_key.items():
        value = labels.get(key)
        if value in (None, "", []):
            if require and question.get("required"):
                errors[f"labels.{key}"] = f"An answer to {question['prompt']!r} is required."
            continue
        qtype = question["type"]
        if qtype == "single_choice":
            if not isinstance(value, str) or value not in question["options"]:
                errors[f"labels.{key}"] = (
                    f"Choose one of: {', '.join(question['options'])} (got {value!r})."
                )
            else:
                clean[key] = value
        elif qtype == "multiple_choice":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors[f"labels.{key}"] = "Give a list of options."
                continue
            unknown = [v for v in value if v not in question["options"]]
            if unknown:
                errors[f"labels.{key}"] = (
                    f"Unknown option(s) {', '.join(map(repr, unknown))}; "
                    f"choose from: {', '.join(question['options'])}."
                )
            else:  # canonical: schema order, no duplicates
                clean[key] = [o for o in question["options"] if o in value]
        elif qtype == "rating":
            scale = question["scale"]
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= scale:
                errors[f"labels.{key}"] = f"Rate with a whole number from 1 to {scale}."
            else:
                clean[key] = value
        else:  # text
            if not isinstance(value, str):
                errors[f"labels.{key}"] = "Answer with text."
            elif len(value) > LABEL_TEXT_MAX_CHARS:
                errors[f"labels.{key}"] = f"At most {LABEL_TEXT_MAX_CHARS:,} characters."
            else:
                clean[key] = value
    if errors:
        raise ValidationError(errors)
    return clean


def review_validate(
    *,
    item: Item,
    project: Project,
    verdict: Any,
    candidate: Any = None,
    corrected_output: Any = "",
    preferred_candidate: Any = None,
    tie: Any = False,
    rating: Any = None,
    labels: Any = None,
    rationale: Any = "",
    candidates: list[Candidate] | None = None,
) -> dict[str, Any]:
    """Check one decision against the item and the project's settings; return clean fields
    (``candidate`` and ``preferred_candidate`` as ids). Raises ``ValidationError`` keyed by
    field, with every problem found.

    Rules: ``correct`` needs a ``corrected_output`` that differs from the candidate's output
    (and only ``correct`` may carry one); an item with several candidates needs ``candidate``
    said, or a preference (``preferred_candidate`` or ``tie``) from which it follows; in a
    project with the compare mode, accepting or correcting a multi-candidate item needs a
    preference; ``rating`` is 1..5; ``labels`` follow the label schema (required questions only
    for counted verdicts in label mode). A ``skip`` keeps only its rationale.
    """
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if verdict not in Verdict.values:
        raise ValidationError({"verdict": f"Verdict must be one of {', '.join(Verdict.values)}."})
    if not isinstance(rationale, str | None):
        add("rationale", "Rationale must be text.")
        rationale = ""
    rationale = (rationale or "").strip()
    if len(rationale) > RATIONALE_MAX_CHARS:
        add("rationale", f"At most {RATIONALE_MAX_CHARS:,} characters.")
    if verdict == Verdict.SKIP:
        if errors:
            raise ValidationError(errors)
        return {
            "verdict": verdict,
            "candidate": None,
            "corrected_output": "",
            "preferred_candidate": None,
            "tie": False,
            "rating": None,
            "labels": {},
            "rationale": rationale,
        }

    candidates = candidates if candidates is not None else _candidates(item)
    by_id = {c.pk: c for c in candidates}
    candidate_id = _as_id(candidate, "candidate")
    preferred_id = _as_id(preferred_candidate, "preferred_candidate")
    if not isinstance(tie, bool):
        add("tie", "Tie must be true or false.")
        tie = False
    if candidate_id is not None and candidate_id not in by_id:
        add("candidate", f"Candidate {candidate_id} is not one of this item's outputs.")
        candidate_id = None
    if preferred_id is not None and preferred_id not in by_id:
        add("preferred_candidate", f"Candidate {preferred_id} is not one of this item's outputs.")
        preferred_id = None
    if tie and preferred_id is not None:
        add("preferred_candidate", "Give a preferred candidate or a tie, not both.")
    if (tie or preferred_id) and len(candidates) < 2:
        add("preferred_candidate", "A preference needs an item with two or more outputs.")
    if (
        len(candidates) >= 2
        and ReviewMode.COMPARE in project.review_modes
        and verdict in (Verdict.ACCEPT, Verdict.CORRECT)
        and not tie
        and preferred_id is None
    ):
        add("preferred_candidate", "Say which output is better (or that they tie).")
    if candidate_id is None:
        if len(candidates) == 1:
            candidate_id = candidates[0].pk
        elif preferred_id is not None:
            candidate_id = preferred_id
        elif len(candidates) > 1 and verdict != Verdict.REJECT and not tie:
            add("candidate", f"This item has {len(candidates)} outputs: say which one you mean.")
    elif preferred_id is not None and candidate_id != preferred_id and verdict != Verdict.REJECT:
        add("candidate", "You accepted or corrected one output but preferred the other.")
    if not candidates and verdict in (Verdict.ACCEPT, Verdict.CORRECT):
        add("verdict", "This item has no output to accept or correct.")

    if not isinstance(corrected_output, str | None):
        add("corrected_output", "The corrected output must be text.")
        corrected_output = ""
    corrected_output = (corrected_output or "").replace("\r\n", "\n")
    if verdict == Verdict.CORRECT:
        if not corrected_output.strip():
            add("corrected_output", "A correction needs the corrected text.")
        elif len(corrected_output) > CORRECTION_MAX_CHARS:
            add("corrected_output", f"At most {CORRECTION_MAX_CHARS:,} characters.")
        elif candidate_id in by_id and corrected_output == by_id[candidate_id].output:
            add("corrected_output", "The text is unchanged: accept the output instead.")
    elif corrected_output:
        add("corrected_output", f"Only a correction carries corrected text, not {verdict!r}.")

    if rating in ("", None):
        rating = None
    elif isinstance(rating, str) and rating.strip().isdigit():
        rating = int(rating)
    if rating is not None and (
        isinstance(rating, bool)
        or not isinstance(rating, int)
        or not RATING_RANGE[0] <= rating <= RATING_RANGE[1]
    ):
        add("rating", f"Rating must be a whole number from {RATING_RANGE[0]} to {RATING_RANGE[1]}.")
        rating = None

    try:
        labels = labels_validate(
            schema=project.label_schema or [],
            labels=labels,
            require=ReviewMode.LABEL in project.review_modes,
        )
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
        labels = {}

    if errors:
        raise ValidationError(errors)
    return {
        "verdict": verdict,
        "candidate": candidate_id,
        "corrected_output": corrected_output if verdict == Verdict.CORRECT else "",
        "preferred_candidate": preferred_id,
        "tie": tie,
        "rating": rating,
        "labels": labels,
        "rationale": rationale,
    }


def _snapshot(review: Review) -> dict[str, Any]:
    return {
        "verdict": review.verdict,
        "candidate": review.candidate_id,
        "corrected_output": review.corrected_output,
        "preferred_candidate": review.preferred_candidate_id,
        "tie": review.tie,
        "rating": review.rating,
        "labels": review.labels,
        "rationale": review.rationale,
    }


def _apply(review: Review, clean: dict[str, Any]) -> None:
    review.verdict = clean["verdict"]
    review.candidate_id = clean["candidate"]
    review.corrected_output = clean["corrected_output"]
    review.preferred_candidate_id = clean["preferred_candidate"]
    review.tie = clean["tie"]
    review.rating = clean["rating"]
    review.labels = clean["labels"]
    review.rationale = clean["rationale"]


def _order(candidate_order: Any, candidates: list[Candidate]) -> list[int]:
    ids = [c.pk for c in candidates]
    if not candidate_order:
        return ids
    try:
        order = [int(x) for x in candidate_order]
    except (TypeError, ValueError):
        raise ValidationError({"candidate_order": "A list of candidate ids."}) from None
    if sorted(order) != sorted(ids):
        raise ValidationError(
            {"candidate_order": "Must list each of the item's candidate ids once."}
        )
    return order


def _lock(item: Item) -> Item:
    return Item.objects.select_for_update(no_key=True).get(pk=item.pk)


def _submit_context(
    item: Item, expert, idempotency_key: str
) -> tuple[list[tuple], list[Candidate], GuidelineVersion | None]:
    """What a submit reads before its transaction, in one statement (one round trip instead
    of three): the expert's reviews of this item or under this idempotency key, as
    ``(id, item_id, idempotency_key)``; the item's candidates in position order; the
    project's current guideline version."""
    if idempotency_key:
        prior_where, prior_params = (
            # "<> ''" repeats the unique index's condition, so a prepared (generic) plan can
            # use that index too.
            "expert_id = %s AND (item_id = %s OR (idempotency_key = %s AND idempotency_key <> ''))",
            [expert.pk, item.pk, idempotency_key],
        )
    else:
        prior_where, prior_params = "expert_id = %s AND item_id = %s", [expert.pk, item.pk]
    sql = (
        "SELECT 'c', id, position, output, model"  # noqa: S608 (table names only)
        f" FROM {Candidate._meta.db_table} WHERE item_id = %s"
        " UNION ALL SELECT 'g', id, version, NULL, NULL FROM (SELECT id, version"
        f" FROM {GuidelineVersion._meta.db_table} WHERE project_id = %s"
        " ORDER BY version DESC LIMIT 1) g"
        f" UNION ALL SELECT 'r', id, item_id, idempotency_key, NULL FROM {Review._meta.db_table}"
        f" WHERE {prior_where}"
        " ORDER BY 1, 3"
    )
    with hot_cursor() as cursor:
        cursor.execute(sql, [item.pk, item.project_id, *prior_params])
        rows = cursor.fetchall()
    prior, candidates, guideline = [], [], None
    for kind, pk, number, text, model in rows:
        if kind == "c":
            candidates.append(
                Candidate(id=pk, item_id=item.pk, position=number, output=text, model=model)
            )
        elif kind == "g":
            guideline = GuidelineVersion(id=pk, version=number, project_id=item.project_id)
        else:
            prior.append((pk, number, text))
    return prior, candidates, guideline


def _prior(item: Item, expert, idempotency_key: str, rows=None) -> ReviewResult | None:
    """A retry (same key) returns the first review; a decision already made on this item under
    another key raises ``AlreadyDecided``; a key used on another item is refused. ``rows``:
    the expert's reviews of the item or under the key (``_submit_context``)."""
    if rows is None:
        rows = _submit_context(item, expert, idempotency_key)[0]
    for pk, item_id, key in rows:
        if idempotency_key and key == idempotency_key:
            if item_id != item.pk:
                raise ValidationError(
                    {"idempotency_key": "This key was already used for another item."}
                )
            review = Review.objects.select_related("item").get(pk=pk)
            return ReviewResult(review=review, created=False, item=review.item)
    for pk, item_id, _key in rows:
        if item_id == item.pk:
            raise AlreadyDecided(Review.objects.get(pk=pk))
    return None


def _insert(
    review: Review, *, project: Project, now: datetime, outcome: OutcomeDecision | None = None
) -> None:
    """Write the review, its first revision, its audit event and, when given, the item's
    outcome. On PostgreSQL that is one statement (data-modifying CTEs); elsewhere ORM inserts
    and the outcome's upsert."""
    data = _snapshot(review)
    details = {"verdict": review.verdict, "revision": 1}
    if connection.vendor != "postgresql":
        review.save(force_insert=True)
        ReviewRevision.objects.create(
            review=review,
            number=1,
            editor_id=review.expert_id,
            data=data,
            changed=[],
            created_at=now,
        )
        AuditEvent.objects.create(
            project_id=project.pk,
            actor_id=review.expert_id,
            action=AuditAction.REVIEW_SUBMITTED,
            item_id=review.item_id,
            review=review,
            details=details,
            created_at=now,
        )
        if outcome is not None:
            sql, params = outcome_upsert_sql(review.item_id, project.pk, outcome, now)
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
        return
    at = connection.ops.adapt_datetimefield_value(now)
    outcome_cte, outcome_params = "", []
    if outcome is not None:
        outcome_sql, outcome_params = outcome_upsert_sql(review.item_id, project.pk, outcome, now)
        outcome_cte = f", o AS ({outcome_sql})"
    sql = f"""
        WITH r AS (
            INSERT INTO {Review._meta.db_table} (project_id, item_id, expert_id, verdict,
                candidate_id, corrected_output, preferred_candidate_id, tie, rating, labels,
                rationale, candidate_order, time_spent_ms, guideline_version_id,
                idempotency_key, revision, created_at, updated_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, CAST(%s AS jsonb), %s,
                CAST(%s AS jsonb), %s, %s, %s, 1, %s, %s)
            RETURNING id
        ), rev AS (
            INSERT INTO {ReviewRevision._meta.db_table}
                (review_id, number, editor_id, data, changed, created_at)
            SELECT id, 1, %s, CAST(%s AS jsonb), CAST('[]' AS jsonb), %s FROM r
        ), audit AS (
            INSERT INTO {AuditEvent._meta.db_table}
                (project_id, actor_id, action, item_id, review_id, details, created_at)
            SELECT %s, %s, %s, %s, id, CAST(%s AS jsonb), %s FROM r
        ){outcome_cte}
        SELECT id FROM r
    """  # noqa: S608 (table names only; values are parameters)
    params = [
        project.pk,
        review.item_id,
        review.expert_id,
        review.verdict,
        review.candidate_id,
        review.corrected_output,
        review.preferred_candidate_id,
        review.tie,
        review.rating,
        json.dumps(review.labels),
        review.rationale,
        json.dumps(review.candidate_order),
        review.time_spent_ms,
        review.guideline_version_id,
        review.idempotency_key,
        at,
        at,
        review.expert_id,
        json.dumps(data),
        at,
        project.pk,
        review.expert_id,
        AuditAction.REVIEW_SUBMITTED,
        review.item_id,
        json.dumps(details),
        at,
        *outcome_params,
    ]
    with hot_cursor() as cursor:
        cursor.execute(sql, params)
        review.pk = cursor.fetchone()[0]
    review._state.adding = False


def review_submit(
    *,
    item: Item,
    expert,
    verdict: str,
    candidate: Any = None,
    corrected_output: str = "",
    preferred_candidate: Any = None,
    tie: bool = False,
    rating: Any = None,
    labels: Any = None,
    rationale: str = "",
    time_spent_ms: int | None = None,
    candidate_order: Any = None,
    guideline_version: GuidelineVersion | int | None = None,
    idempotency_key: str = "",
    now: datetime | None = None,
) -> ReviewResult:
    """Record ``expert``'s decision on ``item``, which they hold under a lease.

    Opens its own transaction and locks the item row (through ``queue_record_decision``).
    Idempotent: a retry with the same ``idempotency_key`` returns the first review
    (``created=False``), also when both arrive at once. Raises ``ValidationError`` (keyed by
    field) for a bad decision, ``LeaseLost`` / ``ItemFull`` from the queue when the place is
    gone, and ``AlreadyDecided`` when the expert decided the item under another key.
    ``guideline_version`` is the version the expert was shown (default: the current one).
    A counted verdict that completes the item decides its outcome in the same transaction.

    This is the review hot path (every expert action): reads and writes are few and mostly
    raw SQL; ``bench/review_bench.py`` measures it.
    """
    now = now or timezone.now()
    # The caller's item usually carries its project already (access checks load it).
    project = item.project
    if not isinstance(idempotency_key, str) or len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise ValidationError(
            {"idempotency_key": f"At most {IDEMPOTENCY_KEY_MAX} characters of text."}
        )
    if time_spent_ms in ("", None):
        time_spent_ms = None
    elif isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int) or time_spent_ms < 0:
        raise ValidationError({"time_spent_ms": "Time spent must be a whole number of ms ≥ 0."})
    else:
        time_spent_ms = min(time_spent_ms, TIME_SPENT_MAX_MS)
    prior_rows, candidates, current_guideline = _submit_context(item, expert, idempotency_key)
    prior = _prior(item, expert, idempotency_key, prior_rows)
    if prior is not None:
        return prior

    clean = review_validate(
        item=item,
        project=project,
        verdict=verdict,
        candidate=candidate,
        corrected_output=corrected_output,
        preferred_candidate=preferred_candidate,
        tie=tie,
        rating=rating,
        labels=labels,
        rationale=rationale,
        candidates=candidates,
    )
    order = _order(candidate_order, candidates)
    if guideline_version in (None, ""):
        guideline = current_guideline
    elif isinstance(guideline_version, GuidelineVersion):
        guideline = guideline_version
    else:
        guideline = GuidelineVersion.objects.filter(
            project=project, pk=_as_id(guideline_version, "guideline_version")
        ).first()
        if guideline is None:
            raise ValidationError({"guideline_version": "Not a guideline version of this project."})
    if guideline is not None and guideline.project_id != project.pk:
        raise ValidationError({"guideline_version": "Not a guideline version of this project."})

    with transaction.atomic():
        # Locks the item; raises LeaseLost / ItemFull.
        locked = queue_record_decision(
            item=item,
            expert=expert,
            counted=clean["verdict"] != Verdict.SKIP,
            now=now,
            k=project.overlap,
        )
        if not locked.decision_recorded:
            # A twin request committed while this one waited for the lock.
            existing = Review.objects.filter(item_id=item.pk, expert=expert).first()
            if existing is None:
                raise LeaseLost("You already decided this item.")
            if idempotency_key and existing.idempotency_key == idempotency_key:
                return ReviewResult(review=existing, created=False, item=locked)
            raise AlreadyDecided(existing)
        review = Review(
            project_id=project.pk,
            item_id=item.pk,
            expert=expert,
            candidate_order=order,
            time_spent_ms=time_spent_ms,
            guideline_version=guideline,
            idempotency_key=idempotency_key,
            revision=1,
            created_at=now,
            updated_at=now,
        )
        _apply(review, clean)
        decision = None
        if review.counted and locked.review_count >= project.overlap:
            # The item is complete: its outcome is written with the review. With k = 1 this
            # review is the item's only counted one: no need to read the others.
            others = [] if project.overlap == 1 else list(Review.objects.filter(item_id=item.pk))
            decision = item_outcome_decision(
                project=project, candidates=candidates, reviews=[*others, review]
            )
        _insert(review, project=project, now=now, outcome=decision)
        if review.counted and locked.review_count >= project.overlap and decision is None:
            # Fewer counted reviews than the queue counted (cannot happen while both are
            # written together): decide from what is stored, which withdraws the outcome.
            item_outcome_refresh(item=locked, project=project, now=now, candidates=candidates)
    locked.project = project
    return ReviewResult(review=review, created=True, item=locked)


_UNSET: Any = object()


def review_amend(*, review: Review, editor, now: datetime | None = None, **changes: Any) -> Review:
    """Amend a counted decision: a new revision with the fields in ``changes``.

    Only the expert who made the decision may amend it (``PermissionDenied`` otherwise). A
    skip cannot be amended and a decision cannot become a skip (either would change how many
    places the item holds). Changing nothing makes no revision. Locks the item row; the
    item's outcome is decided again unless a manager adjudicated it.
    """
    now = now or timezone.now()
    allowed = set(DECISION_FIELDS)
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationError({unknown[0]: "This field cannot be amended."})
    if review.expert_id != editor.pk:
        raise PermissionDenied("Only the expert who made a decision can amend it.")
    with transaction.atomic():
        item = _lock(review.item)
        review = Review.objects.select_for_update().get(pk=review.pk)
        if review.verdict == Verdict.SKIP:
            raise ValidationError({"verdict": "A skipped item cannot be amended."})
        if changes.get("verdict") == Verdict.SKIP:
            raise ValidationError(
                {"verdict": "A decision cannot be turned into a skip; amend it instead."}
            )
        project = Project.objects.get(pk=item.project_id)
        merged = {**_snapshot(review), **changes}
        if merged["verdict"] != Verdict.CORRECT and "corrected_output" not in changes:
            merged["corrected_output"] = ""
        clean = review_validate(item=item, project=project, **merged)
        before = _snapshot(review)
        _apply(review, clean)
        after = _snapshot(review)
        changed = [f for f in DECISION_FIELDS if before[f] != after[f]]
        if not changed:
            return review
        review.revision += 1
        review.updated_at = now
        review.save()
        ReviewRevision.objects.create(
            review=review,
            number=review.revision,
            editor=editor,
            data=after,
            changed=changed,
            created_at=now,
        )
        AuditEvent.objects.create(
            project_id=project.pk,
            actor=editor,
            action=AuditAction.REVIEW_AMENDED,
            item_id=item.pk,
            review=review,
            details={"revision": review.revision, "changed": changed},
            created_at=now,
        )
        if item.review_count >= project.overlap:
            item_outcome_refresh(item=item, project=project, now=now)
    return review
