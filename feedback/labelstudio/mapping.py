"""Between Redline and Label Studio: the labeling config, task data, and annotation results.

Pure functions (no database, no network), so every rule here is unit-tested on its own.

The labeling config Redline generates names its controls so that a result can be mapped
back without guessing (``CONTROL_*`` below). For a Redline project with the ``correct`` mode:

- ``correction``: a ``TextArea`` prefilled with the item's single output. Submitted with
  other text it becomes a **correction** of that output; the same text (or no result) is
  an **accept**.
- ``reject``: a ``Choices`` with one option, ``Reject``: a **reject** of the output.

Always:

- ``preference``: a ``Pairwise`` over ``output_a`` / ``output_b`` for two-candidate items:
  ``left`` prefers the first candidate, ``right`` the second. On a two-candidate item a
  ``correction`` text corrects the preferred output.
- ``rating``: a ``Rating`` of 1..5, the review's overall rating.
- ``label_<key>``: one control per label-schema question: ``Choices`` (single or
  multiple choice), ``Rating`` (``maxRating`` = the question's scale) or ``TextArea`` (text).
- ``rationale``: a ``TextArea`` for the reason, optional.

A cancelled (skipped) annotation is a **skip**. Everything else, an unknown control or
result type, a value of the wrong shape, is a ``MappingError`` naming the control.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

CONTROL_CORRECTION = "correction"
CONTROL_REJECT = "reject"
CONTROL_PREFERENCE = "preference"
CONTROL_RATING = "rating"
CONTROL_RATIONALE = "rationale"
LABEL_PREFIX = "label_"
REJECT_CHOICE = "Reject"
PAIRWISE_SIDES = {"left": 0, "right": 1}
OVERALL_RATING_MAX = 5

# Task data keys (Label Studio checks that every $variable of the config is in each task).
DATA_ITEM_ID = "redline_item_id"
DATA_PROJECT = "redline_project"
DATA_KEYS = ("prompt", "output", "output_a", "output_b")

# Items Label Studio's Pairwise can show: one output, or two to compare.
MAX_CANDIDATES = 2


class MappingError(ValueError):
    """An annotation (or task) that cannot become a Redline decision; the message says what
    and where, for the per-task report."""


@dataclass(frozen=True)
class CandidateView:
    id: int
    output: str


@dataclass
class Decision:
    """Arguments for ``review_submit`` / ``review_amend`` (less item and expert)."""

    verdict: str
    candidate: int | None = None
    corrected_output: str = ""
    preferred_candidate: int | None = None
    rating: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "candidate": self.candidate,
            "corrected_output": self.corrected_output,
            "preferred_candidate": self.preferred_candidate,
            "tie": False,
            "rating": self.rating,
            "labels": self.labels,
            "rationale": self.rationale,
        }


# ---- Redline → Label Studio ------------------------------------------------------------------


def labeling_config(*, review_modes: Sequence[str], label_schema: Sequence[dict]) -> str:
    """The Label Studio labeling config (XML) for a project with these settings. Every text
    from the schema is XML-escaped; control names are fixed (``label_<key>`` for questions)."""
    q = quoteattr
    parts = [
        "<View>",
        '  <Header value="Prompt"/>',
        '  <Text name="prompt" value="$prompt"/>',
        '  <Header value="Output A"/>',
        '  <Text name="output_a" value="$output_a"/>',
        '  <Header value="Output B (two-output items only)"/>',
        '  <Text name="output_b" value="$output_b"/>',
        '  <Header value="Which output is better? (two-output items)"/>',
        f'  <Pairwise name="{CONTROL_PREFERENCE}" toName="output_a,output_b"/>',
    ]
    if "correct" in review_modes:
        parts += [
            '  <Header value="Correct the output: edit the text, then submit it'
            " (leave it unchanged to accept; on a two-output item, write the corrected"
            ' preferred output)"/>',
            f'  <TextArea name="{CONTROL_CORRECTION}" toName="prompt" value="$output"'
            ' editable="true" maxSubmissions="1" rows="8"/>',
            f'  <Choices name="{CONTROL_REJECT}" toName="prompt" choice="multiple">',
            f"    <Choice value={q(REJECT_CHOICE)}/>",
            "  </Choices>",
        ]
    parts += [
        '  <Header value="Overall rating (optional)"/>',
        f'  <Rating name="{CONTROL_RATING}" toName="prompt" maxRating="{OVERALL_RATING_MAX}"/>',
    ]
    for question in label_schema:
        name = q(LABEL_PREFIX + question["key"])
        required = ' required="true"' if question.get("required") else ""
        parts.append(f"  <Header value={q(question['prompt'])}/>")
        qtype = question["type"]
        if qtype in ("single_choice", "multiple_choice"):
            mode = "single-radio" if qtype == "single_choice" else "multiple"
            parts.append(f'  <Choices name={name} toName="prompt" choice="{mode}"{required}>')
            parts += [f"    <Choice value={q(option)}/>" for option in question["options"]]
            parts.append("  </Choices>")
        elif qtype == "rating":
            parts.append(
                f'  <Rating name={name} toName="prompt" maxRating="{int(question["scale"])}"'
                f"{required}/>"
            )
        else:
            parts.append(
                f'  <TextArea name={name} toName="prompt" editable="true"'
                f' maxSubmissions="1"{required}/>'
            )
    parts += [
        '  <Header value="Why? (optional)"/>',
        f'  <TextArea name="{CONTROL_RATIONALE}" toName="prompt" editable="true"'
        ' maxSubmissions="1"/>',
        "</View>",
    ]
    return "\n".join(parts) + "\n"


def task_data(
    *,
    item_id: int,
    project_slug: str,
    external_id: str,
    prompt: str,
    candidates: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The ``data`` of the Label Studio task for one item (``candidates``: (output, model) in
    position order). Raises ``MappingError`` for an item Label Studio cannot show."""
    if not candidates:
        raise MappingError("The item has no output to review.")
    if len(candidates) > MAX_CANDIDATES:
        raise MappingError(
            f"The item has {len(candidates)} outputs; Label Studio's Pairwise compares two."
        )
    first = candidates[0]
    second = candidates[1] if len(candidates) > 1 else ("", "")
    return {
        DATA_ITEM_ID: item_id,
        DATA_PROJECT: project_slug,
        "external_id": external_id,
        "prompt": prompt,
        # The correction box is prefilled only for single-output items; on a pair the
        # annotator writes the corrected preferred output.
        "output": first[0] if len(candidates) == 1 else "",
        "output_a": first[0],
        "output_b": second[0],
        "model_a": first[1],
        "model_b": second[1],
    }


# ---- Label Studio → Redline ------------------------------------------------------------------


def result_sha256(annotation: dict[str, Any]) -> str:
    """A fingerprint of what an annotation says (its result and whether it was cancelled):
    a pull amends a review only when this changed."""
    body = {
        "result": annotation.get("result") or [],
        "was_cancelled": bool(annotation.get("was_cancelled")),
    }
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _text(value: dict, where: str) -> str:
    text = value.get("text")
    if isinstance(text, str):
        return text
    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        return "\n".join(text)
    raise MappingError(f"{where}: a textarea result needs value.text (a list of strings).")


def _choices(value: dict, where: str) -> list[str]:
    choices = value.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise MappingError(f"{where}: a choices result needs value.choices (a list of strings).")
    return choices


def _rating(value: dict, where: str) -> int:
    rating = value.get("rating")
    if isinstance(rating, float) and rating.is_integer():
        rating = int(rating)
    if isinstance(rating, bool) or not isinstance(rating, int):
        raise MappingError(f"{where}: a rating result needs value.rating (a whole number).")
    return rating


def _normal(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def annotation_to_decision(
    annotation: dict[str, Any],
    *,
    candidates: Sequence[CandidateView],
    label_schema: Sequence[dict],
) -> Decision:
    """The Redline decision an annotation stands for. ``candidates`` are the item's outputs in
    position order. Raises ``MappingError`` for anything it cannot read; the label answers
    and the verdict rules are then checked by ``review_validate`` like any decision."""
    if not isinstance(annotation, dict):
        raise MappingError("An annotation must be an object.")
    if annotation.get("was_cancelled"):
        return Decision(verdict="skip")
    results = annotation.get("result")
    if results is None:
        results = []
    if not isinstance(results, list):
        raise MappingError("The annotation's result must be a list.")
    questions = {LABEL_PREFIX + q["key"]: q for q in label_schema}
    correction: str | None = None
    rejected = False
    preferred_index: int | None = None
    decision = Decision(verdict="accept")
    for n, result in enumerate(results, start=1):
        if not isinstance(result, dict):
            raise MappingError(f"result {n}: must be an object.")
        from_name, rtype, value = result.get("from_name"), result.get("type"), result.get("value")
        if not isinstance(from_name, str) or not from_name:
            raise MappingError(f"result {n}: from_name is missing.")
        where = f"result {n} ({from_name!r})"
        if not isinstance(rtype, str) or not rtype:
            raise MappingError(f"{where}: type is missing.")
        if not isinstance(value, dict):
            raise MappingError(f"{where}: value is missing or not an object.")
        expected = _expected_type(from_name, questions)
        if expected is None:
            raise MappingError(f"{where}: no such control in Redline's labeling config.")
        if rtype != expected:
            raise MappingError(
                f"{where}: unknown result type {rtype!r} for this control (expected {expected!r})."
            )
        if from_name == CONTROL_CORRECTION:
            correction = _text(value, where)
        elif from_name == CONTROL_REJECT:
            rejected = REJECT_CHOICE in _choices(value, where)
        elif from_name == CONTROL_PREFERENCE:
            selected = value.get("selected")
            if selected not in PAIRWISE_SIDES:
                raise MappingError(f"{where}: value.selected must be 'left' or 'right'.")
            preferred_index = PAIRWISE_SIDES[selected]
        elif from_name == CONTROL_RATING:
            decision.rating = _rating(value, where)
        elif from_name == CONTROL_RATIONALE:
            decision.rationale = _text(value, where)
        else:
            question = questions[from_name]
            key, qtype = question["key"], question["type"]
            if qtype == "single_choice":
                picked = _choices(value, where)
                if len(picked) != 1:
                    raise MappingError(f"{where}: choose exactly one option (got {len(picked)}).")
                decision.labels[key] = picked[0]
            elif qtype == "multiple_choice":
                decision.labels[key] = _choices(value, where)
            elif qtype == "rating":
                decision.labels[key] = _rating(value, where)
            else:
                decision.labels[key] = _text(value, where)

    if preferred_index is not None:
        if preferred_index >= len(candidates):
            raise MappingError(
                f"The annotation prefers output {'AB'[preferred_index]}, but the item has "
                f"{len(candidates)} output(s)."
            )
        decision.preferred_candidate = candidates[preferred_index].id
    if len(candidates) == 1:
        target: CandidateView | None = candidates[0]
    elif preferred_index is not None:
        target = candidates[preferred_index]
    else:
        target = None
    if rejected:
        decision.verdict = "reject"
        decision.candidate = target.id if target else None
        return decision
    text = _normal(correction or "")
    if text and (target is None or text != _normal(target.output)):
        if target is None:
            raise MappingError(
                "The annotation corrects an output of a two-output item without saying which "
                "output is better (Pairwise)."
            )
        decision.verdict = "correct"
        decision.corrected_output = correction.replace("\r\n", "\n")
    decision.candidate = target.id if target else None
    return decision


def _expected_type(from_name: str, questions: dict[str, dict]) -> str | None:
    fixed = {
        CONTROL_CORRECTION: "textarea",
        CONTROL_REJECT: "choices",
        CONTROL_PREFERENCE: "pairwise",
        CONTROL_RATING: "rating",
        CONTROL_RATIONALE: "textarea",
    }
    if from_name in fixed:
        return fixed[from_name]
    question = questions.get(from_name)
    if question is None:
        return None
    return {
        "single_choice": "choices",
        "multiple_choice": "choices",
        "rating": "rating",
    }.get(question["type"], "textarea")
