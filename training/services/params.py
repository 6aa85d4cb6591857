"""Build parameters: checked and normalised once, the same for the page, the API and the
command line. The canonical form is what a request's fingerprint, the version row and the
manifest hold, so two requests that mean the same thing are the same request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from django.core.exceptions import ValidationError

from curation.models import Project
from feedback.models import Outcome, OutcomeSource
from training.services.mapping import KINDS

EVAL_FRACTION_MAX = 0.5
SEED_MAX = 2**31 - 1
MIN_EDIT_MAX = 10_000
SYSTEM_PROMPT_MAX = 20_000
MODELS_MAX = 100
GOLD_CHOICES = ("include", "exclude", "only")
DEFAULTS: dict[str, Any] = {
    "kinds": list(KINDS),
    "eval_fraction": 0.1,
    "seed": 0,
    "outcomes": [Outcome.ACCEPTED],
    "sources": [],
    "min_agreement": None,
    "date_from": None,
    "date_to": None,
    "models": [],
    "labels": {},
    "gold": "include",
    "dedup": True,
    "min_edit_chars": 1,
    "system_prompt": "",
}


def _number(value: Any, *, integer: bool) -> int | float:
    if isinstance(value, bool) or value is None:
        raise ValueError
    if isinstance(value, str):
        value = value.strip()
    number = int(value) if integer else float(value)
    if not integer and number != number:  # NaN
        raise ValueError
    return number


def _date(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value.isoformat()
    return date.fromisoformat(str(value).strip()).isoformat()


def _string_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError
    return [v.strip() for v in value if v.strip()]


def params_clean(*, project: Project, raw: dict[str, Any]) -> dict[str, Any]:
    """Check a build request and return its canonical form (what the fingerprint, the row
    and the manifest hold). ``raw`` takes the keys of ``DEFAULTS``; a missing key takes the
    default. Raises ``ValidationError`` keyed by those names (``labels.<key>`` for a label
    answer), with every problem found."""
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ValidationError({"__all__": f"Unknown parameter(s): {', '.join(unknown)}."})
    values = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    try:
        kinds = _string_list(values["kinds"])
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            add("kinds", f"Unknown kind(s) {', '.join(map(repr, bad))}; use {', '.join(KINDS)}.")
        kinds = [k for k in KINDS if k in kinds]
        if not kinds and not bad:
            add("kinds", "Choose at least one kind: sft, preference or kto.")
    except ValueError:
        add("kinds", "A list of kinds: sft, preference, kto.")
        kinds = []

    eval_fraction = 0.0
    try:
        eval_fraction = float(_number(values["eval_fraction"], integer=False))
        if not 0 <= eval_fraction <= EVAL_FRACTION_MAX:
            add("eval_fraction", f"The eval fraction goes from 0 to {EVAL_FRACTION_MAX}.")
    except (TypeError, ValueError):
        add("eval_fraction", "The eval fraction must be a number from 0 to 0.5.")

    seed = 0
    try:
        seed = int(_number(values["seed"], integer=True))
        if not 0 <= seed <= SEED_MAX:
            add("seed", f"The seed is a whole number from 0 to {SEED_MAX}.")
    except (TypeError, ValueError):
        add("seed", f"The seed is a whole number from 0 to {SEED_MAX}.")

    try:
        outcomes = _string_list(values["outcomes"])
        allowed = (Outcome.ACCEPTED, Outcome.REJECTED)
        if not outcomes or any(o not in allowed for o in outcomes):
            raise ValueError
        outcomes = [o for o in allowed if o in outcomes]
    except ValueError:
        add("outcomes", "Choose accepted, rejected or both.")
        outcomes = [Outcome.ACCEPTED]

    try:
        sources = _string_list(values["sources"])
        if any(s not in OutcomeSource.values for s in sources):
            raise ValueError
        sources = [s for s in OutcomeSource.values if s in sources]
        if len(sources) == len(OutcomeSource.values):
            sources = []  # all of them: the same request as none
    except ValueError:
        add("sources", f"Sources are among: {', '.join(OutcomeSource.values)}.")
        sources = []

    min_agreement = values["min_agreement"]
    if min_agreement in (None, ""):
        min_agreement = None
    else:
        try:
            min_agreement = float(_number(min_agreement, integer=False))
            if not 0 <= min_agreement <= 1:
                raise ValueError
            if min_agreement == 0:
                min_agreement = None
        except (TypeError, ValueError):
            add("min_agreement", "Minimum agreement is a number from 0 to 1.")
            min_agreement = None

    dates = {}
    for key in ("date_from", "date_to"):
        try:
            dates[key] = _date(values[key])
        except (TypeError, ValueError):
            add(key, "A date as YYYY-MM-DD.")
            dates[key] = None
    if dates["date_from"] and dates["date_to"] and dates["date_from"] > dates["date_to"]:
        add("date_to", "The end date is before the start date.")

    try:
        models = sorted(set(_string_list(values["models"])))
        if len(models) > MODELS_MAX:
            add("models", f"At most {MODELS_MAX} models.")
    except ValueError:
        add("models", "A list of model names.")
        models = []

    labels = _labels_clean(project, values["labels"], add)

    gold = values["gold"] or "include"
    if gold not in GOLD_CHOICES:
        add("gold", f"Gold items: {', '.join(GOLD_CHOICES)}.")
        gold = "include"

    dedup = values["dedup"]
    if isinstance(dedup, str) and dedup.lower() in ("true", "false", "1", "0", "on", ""):
        dedup = dedup.lower() in ("true", "1", "on")
    if not isinstance(dedup, bool):
        add("dedup", "True or false.")
        dedup = True

    min_edit = 1
    try:
        min_edit = int(_number(values["min_edit_chars"], integer=True))
        if not 0 <= min_edit <= MIN_EDIT_MAX:
            raise ValueError
    except (TypeError, ValueError):
        add("min_edit_chars", f"A whole number of characters from 0 to {MIN_EDIT_MAX}.")

    system_prompt = values["system_prompt"]
    if not isinstance(system_prompt, str):
        add("system_prompt", "The system prompt must be text.")
        system_prompt = ""
    system_prompt = system_prompt.replace("\r\n", "\n").strip()
    if len(system_prompt) > SYSTEM_PROMPT_MAX:
        add("system_prompt", f"At most {SYSTEM_PROMPT_MAX:,} characters.")

    if errors:
        raise ValidationError(errors)
    return {
        "kinds": kinds,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "filters": {
            "outcomes": outcomes,
            "sources": sources,
            "min_agreement": min_agreement,
            "date_from": dates["date_from"],
            "date_to": dates["date_to"],
            "models": models,
            "labels": labels,
            "gold": gold,
        },
        "options": {"dedup": dedup, "min_edit_chars": min_edit, "system_prompt": system_prompt},
    }


def _labels_clean(project: Project, labels: Any, add: Callable[[str, str], None]) -> dict:
    """``{question key: answer}`` checked against the label schema: choices must be options,
    ratings whole numbers in the scale; text questions cannot be filtered on."""
    if labels in (None, ""):
        return {}
    if not isinstance(labels, dict):
        add("labels", "Label answers are an object of {question key: answer}.")
        return {}
    schema = {q["key"]: q for q in project.label_schema or []}
    clean: dict[str, Any] = {}
    for key in sorted(labels):
        answer = labels[key]
        if answer in (None, ""):
            continue
        question = schema.get(key)
        if question is None:
            add(f"labels.{key}", f"No question {key!r} in this project's label schema.")
        elif question["type"] in ("single_choice", "multiple_choice"):
            if answer not in question["options"]:
                add(f"labels.{key}", f"Choose one of: {', '.join(question['options'])}.")
            else:
                clean[key] = answer
        elif question["type"] == "rating":
            try:
                rating = int(_number(answer, integer=True))
                if not 1 <= rating <= question["scale"]:
                    raise ValueError
                clean[key] = rating
            except (TypeError, ValueError):
                add(f"labels.{key}", f"A rating from 1 to {question['scale']}.")
        else:
            add(f"labels.{key}", "Free-text answers cannot be filtered on.")
    return clean
