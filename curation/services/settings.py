"""Writes for a project's review settings and its guidelines.

Every setting a reviewer depends on (review modes, label schema, overlap k, lease length, blind
mode) is written here and nowhere else, after validation whose messages name the field and, for
the label schema, the question.
"""

from __future__ import annotations

import math
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from curation.models import (
    Assignment,
    AssignmentState,
    GuidelineVersion,
    Item,
    OutcomeRule,
    Project,
    ReviewMode,
)
from curation.services.queue import project_items_refresh_status

QUESTION_TYPES = ("single_choice", "multiple_choice", "rating", "text")
CHOICE_TYPES = ("single_choice", "multiple_choice")
QUESTION_KEYS = {"key", "prompt", "type", "options", "scale", "required"}
KEY_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
KEY_MAX_LENGTH = 64
MAX_QUESTIONS = 50
MAX_OPTIONS = 100
RATING_SCALE = (2, 10)
OVERLAP_RANGE = (1, 50)
LEASE_SECONDS_RANGE = (60, 24 * 60 * 60)
GUIDELINES_MAX_CHARS = 200_000


def _question_name(index: int, question: Any) -> str:
    key = question.get("key") if isinstance(question, dict) else None
    if isinstance(key, str) and key.strip():
        return f"question {index} ({key.strip()!r})"
    return f"question {index}"


def label_schema_validate(schema: Any) -> list[dict]:
    """Check a label schema and return it normalised (every question with all its keys).

    A schema is a list of questions; each question is an object with:

    - ``key``: a slug (lower-case letters, digits, ``-`` or ``_``), unique in the schema;
    - ``prompt``: the question shown to the expert (non-empty);
    - ``type``: ``single_choice``, ``multiple_choice``, ``rating`` or ``text``;
    - ``options``: for the choice types, at least two distinct non-empty strings;
    - ``scale``: for ``rating``, an integer N from 2 to 10 (the expert rates 1..N);
    - ``required``: whether an answer is needed (boolean, default false).

    Raises ``ValidationError({"label_schema": [...]})`` listing every problem, each message
    naming its question by position (1-based) and key, e.g.
    ``question 2 ('tone'): options must have at least two entries``.
    """
    if schema is None:
        schema = []
    if not isinstance(schema, list):
        raise ValidationError({"label_schema": "The label schema must be a list of questions."})
    if len(schema) > MAX_QUESTIONS:
        raise ValidationError(
            {"label_schema": f"A label schema has at most {MAX_QUESTIONS} questions."}
        )
    errors: list[str] = []
    normalised: list[dict] = []
    seen_keys: dict[str, int] = {}
    for index, question in enumerate(schema, start=1):
        name = _question_name(index, question)
        problems: list[str] = []
        if not isinstance(question, dict):
            errors.append(f"{name}: must be an object with key, prompt and type")
            continue
        unknown = sorted(set(question) - QUESTION_KEYS)
        if unknown:
            problems.append(f"unknown field(s) {', '.join(map(repr, unknown))}")

        key = question.get("key")
        if not isinstance(key, str) or not key.strip():
            problems.append("key is required")
        else:
            key = key.strip()
            if not KEY_RE.match(key) or len(key) > KEY_MAX_LENGTH:
                problems.append(
                    f"key {key!r} must be a slug of lower-case letters, digits, '-' or '_' "
                    f"(at most {KEY_MAX_LENGTH} characters)"
                )
            elif key in seen_keys:
                problems.append(f"key {key!r} is already used by question {seen_keys[key]}")
            else:
                seen_keys[key] = index

        prompt = question.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append("prompt must be a non-empty string")

        qtype = question.get("type")
        if qtype not in QUESTION_TYPES:
            problems.append(f"type must be one of {', '.join(QUESTION_TYPES)}")

        options = question.get("options")
        if qtype in CHOICE_TYPES:
            if not isinstance(options, list):
                problems.append("options must be a list of at least two strings")
            else:
                if not all(isinstance(o, str) and o.strip() for o in options):
                    problems.append("options must all be non-empty strings")
                else:
                    options = [o.strip() for o in options]
                    if len(set(options)) != len(options):
                        problems.append("options must be distinct")
                if len(options) < 2:
                    problems.append("options must have at least two entries")
                elif len(options) > MAX_OPTIONS:
                    problems.append(f"options may have at most {MAX_OPTIONS} entries")
        elif options not in (None, []):
            problems.append(f"options are only allowed for {' and '.join(CHOICE_TYPES)}")

        scale = question.get("scale")
        if qtype == "rating":
            low, high = RATING_SCALE
            if isinstance(scale, bool) or not isinstance(scale, int) or not low <= scale <= high:
                problems.append(f"scale must be an integer from {low} to {high} (rating 1..N)")
        elif scale is not None:
            problems.append("scale is only allowed for rating")

        required = question.get("required", False)
        if not isinstance(required, bool):
            problems.append("required must be true or false")

        if problems:
            errors.extend(f"{name}: {problem}" for problem in problems)
            continue
        clean = {"key": key, "prompt": prompt.strip(), "type": qtype, "required": required}
        if qtype in CHOICE_TYPES:
            clean["options"] = options
        if qtype == "rating":
            clean["scale"] = scale
        normalised.append(clean)
    if errors:
        raise ValidationError({"label_schema": errors})
    return normalised


def review_modes_validate(modes: Any) -> list[str]:
    """A non-empty list of distinct review modes, returned in canonical order."""
    if not isinstance(modes, list | tuple) or not modes:
        raise ValidationError(
            {"review_modes": "Choose at least one review mode: correct, compare or label."}
        )
    unknown = [m for m in modes if m not in ReviewMode.values]
    if unknown:
        raise ValidationError(
            {
                "review_modes": f"Unknown review mode(s) {', '.join(map(repr, unknown))}; "
                f"use {', '.join(ReviewMode.values)}."
            }
        )
    return [m for m in ReviewMode.values if m in modes]


def project_has_reviews(*, project: Project) -> bool:
    """Whether any counted decision exists for the project's items."""
    return (
        Assignment.objects.filter(project=project, state=AssignmentState.SUBMITTED).exists()
        or Item.objects.filter(project=project, review_count__gt=0).exists()
    )


def _int_in_range(field: str, value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError({field: f"{what} must be a whole number."})
    if not low <= value <= high:
        raise ValidationError({field: f"{what} must be between {low} and {high}."})
    return value


_UNSET: Any = object()


@transaction.atomic
def project_settings_update(
    *,
    project: Project,
    review_modes: list[str] = _UNSET,
    label_schema: list[dict] = _UNSET,
    overlap: int = _UNSET,
    lease_seconds: int = _UNSET,
    blind: bool = _UNSET,
    outcome_rule: str = _UNSET,
    ingest_sample_fraction: float = _UNSET,
    ingest_low_confidence_first: bool = _UNSET,
) -> Project:
    """Validate and save a project's review settings; arguments left out keep their value.

    The caller has checked that the actor manages the project. Locks the project row, so two
    managers saving at once apply one after the other. Rules, each failing with a
    ``ValidationError`` keyed by the field:

    - ``review_modes``: a non-empty subset of correct / compare / label;
    - ``label_schema``: see :func:`label_schema_validate`; the ``label`` mode needs at least one
      question;
    - ``overlap`` (k): 1..50, and once reviews exist it may only go up (lowering it would
      strand items whose counted reviews already exceed the new k);
    - ``lease_seconds``: one minute to 24 hours;
    - ``blind``: a boolean;
    - ``outcome_rule``: ``unanimous`` or ``majority``; items already decided are re-decided
      under the new rule (adjudicated ones keep the manager's decision);
    - ``ingest_sample_fraction``: the share (0..1) of new production records that become
      queue items (``curation.services.ingest``);
    - ``ingest_low_confidence_first``: a boolean; sampled records with a confidence score are
      queued least confident first.
    """
    locked = Project.objects.select_for_update().get(pk=project.pk)
    errors: dict[str, list[str]] = {}

    def check(fn, *args):
        try:
            return fn(*args)
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                errors.setdefault(key, []).extend(messages)
            return None

    modes = locked.review_modes if review_modes is _UNSET else review_modes
    modes = check(review_modes_validate, modes)
    schema = locked.label_schema if label_schema is _UNSET else label_schema
    schema = check(label_schema_validate, schema)
    if modes and ReviewMode.LABEL in modes and schema is not None and not schema:
        errors.setdefault("label_schema", []).append(
            "The label review mode needs at least one question in the label schema."
        )

    new_overlap = locked.overlap
    if overlap is not _UNSET:
        new_overlap = check(_int_in_range, "overlap", overlap, *OVERLAP_RANGE, "Overlap (k)")
        if (
            new_overlap is not None
            and new_overlap < locked.overlap
            and project_has_reviews(project=locked)
        ):
            errors.setdefault("overlap", []).append(
                f"Reviews already exist, so overlap (k) can only be raised: it is "
                f"{locked.overlap} now and cannot go down to {new_overlap}."
            )

    new_lease = locked.lease_seconds
    if lease_seconds is not _UNSET:
        low, high = LEASE_SECONDS_RANGE
        new_lease = check(
            _int_in_range,
            "lease_seconds",
            lease_seconds,
            low,
            high,
            "Lease length in seconds",
        )

    new_blind = locked.blind
    if blind is not _UNSET:
        if not isinstance(blind, bool):
            errors.setdefault("blind", []).append("Blind mode must be true or false.")
        else:
            new_blind = blind

    new_rule = locked.outcome_rule
    if outcome_rule is not _UNSET:
        if outcome_rule not in OutcomeRule.values:
            errors.setdefault("outcome_rule", []).append(
                f"Outcome rule must be one of {', '.join(OutcomeRule.values)}."
            )
        else:
            new_rule = outcome_rule

    new_fraction = locked.ingest_sample_fraction
    if ingest_sample_fraction is not _UNSET:
        value = ingest_sample_fraction
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= 1
        ):
            errors.setdefault("ingest_sample_fraction", []).append(
                "The sampling fraction must be a number from 0 to 1 (0.1 samples one in ten)."
            )
        else:
            new_fraction = float(value)

    new_low_first = locked.ingest_low_confidence_first
    if ingest_low_confidence_first is not _UNSET:
        if not isinstance(ingest_low_confidence_first, bool):
            errors.setdefault("ingest_low_confidence_first", []).append(
                "Low-confidence-first must be true or false."
            )
        else:
            new_low_first = ingest_low_confidence_first

    if errors:
        raise ValidationError(errors)

    rule_changed = new_rule != locked.outcome_rule
    locked.outcome_rule = new_rule
    overlap_changed = new_overlap != locked.overlap
    locked.review_modes = modes
    locked.label_schema = schema
    locked.overlap = new_overlap
    locked.lease_seconds = new_lease
    locked.blind = new_blind
    locked.ingest_sample_fraction = new_fraction
    locked.ingest_low_confidence_first = new_low_first
    locked.save(
        update_fields=[
            "review_modes",
            "label_schema",
            "overlap",
            "lease_seconds",
            "blind",
            "outcome_rule",
            "ingest_sample_fraction",
            "ingest_low_confidence_first",
            "updated_at",
        ]
    )
    if overlap_changed:  # items complete under the old k reopen (or close) under the new one
        project_items_refresh_status(project=locked)
    if overlap_changed or rule_changed:
        from feedback.services import project_outcomes_refresh

        project_outcomes_refresh(project=locked)
    # Keep the caller's instance (which may carry annotations such as user_role) in step.
    for field in (
        "review_modes",
        "label_schema",
        "overlap",
        "lease_seconds",
        "blind",
        "outcome_rule",
        "ingest_sample_fraction",
        "ingest_low_confidence_first",
    ):
        setattr(project, field, getattr(locked, field))
    project.updated_at = locked.updated_at
    return project


def _normalise_guidelines(text: str) -> str:
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


@transaction.atomic
def guideline_publish(*, project: Project, text: str, created_by) -> tuple[GuidelineVersion, bool]:
    """Publish ``text`` (markdown) as the project's next guideline version.

    Returns ``(version, created)``. Versions are immutable: a change is always a new row, and
    text equal to the current version's (after normalising line endings and trailing
    whitespace) makes no new version and returns the current one. The caller has checked
    that the actor manages the project. Locks the project row so that version numbers are
    handed out one at a time (the unique (project, version) constraint backs this up).
    """
    if not isinstance(text, str):
        raise ValidationError({"text": "Guidelines must be text."})
    text = _normalise_guidelines(text)
    if not text.strip():
        raise ValidationError({"text": "Guidelines cannot be empty."})
    if len(text) > GUIDELINES_MAX_CHARS:
        raise ValidationError(
            {"text": f"Guidelines may be at most {GUIDELINES_MAX_CHARS:,} characters long."}
        )
    Project.objects.select_for_update().only("pk").get(pk=project.pk)
    current = GuidelineVersion.objects.filter(project=project).order_by("-version").first()
    if current is not None and current.text == text:
        return current, False
    version = GuidelineVersion.objects.create(
        project=project,
        version=current.version + 1 if current else 1,
        text=text,
        created_by=created_by,
    )
    return version, True
