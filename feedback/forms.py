"""Input forms for the review page. They parse what the browser sends into the arguments of
``feedback.services.review_submit`` / ``review_amend``; every rule about what a decision may
hold lives in the services (``review_validate``), not here."""

from __future__ import annotations

from typing import Any

from django import forms

from feedback.models import Verdict

LABEL_PREFIX = "label-"
RATIONALE_FIELD_MAX = 100_000  # the service's own limit is lower and names the field
PREFER_PREFIX = "prefer-"


def labels_from_post(data, schema: list[dict]) -> dict[str, Any]:
    """The label answers in a POST, one field per question (``label-<key>``; a list for
    multiple choice). Only the schema's questions are read; blanks are left out."""
    labels: dict[str, Any] = {}
    for question in schema or []:
        name = LABEL_PREFIX + question["key"]
        if question["type"] == "multiple_choice":
            values = [v for v in data.getlist(name) if v]
            if values:
                labels[question["key"]] = values
        else:
            value = data.get(name, "")
            if value != "":
                labels[question["key"]] = value
    return labels


def _candidate_ids(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise forms.ValidationError("A comma-separated list of candidate ids.") from None


class ReviewDecisionForm(forms.Form):
    """One decision from the review page.

    ``action`` is the button pressed: ``accept``, ``correct``, ``reject``, ``skip``, ``tie``
    or ``prefer-<candidate id>`` (A better / B better: an accept with that preference).
    ``compare`` says whether the project asks for a preference on this item (compare mode and
    two or more outputs), in which case a correction states the corrected output as the
    preferred one.
    """

    action = forms.CharField(max_length=40)
    # ``verdict`` is accepted in place of ``action`` (as the API names it) by scripted clients.
    ACTION_ALIAS = "verdict"
    corrected_output = forms.CharField(required=False, strip=False)
    correct_candidate = forms.IntegerField(required=False)
    rating = forms.CharField(required=False, max_length=8)
    rationale = forms.CharField(required=False, strip=False, max_length=RATIONALE_FIELD_MAX)
    candidate_order = forms.CharField(required=False, max_length=2000)
    guideline_version = forms.IntegerField(required=False, min_value=1)
    idempotency_key = forms.CharField(required=False, max_length=100)
    time_spent_ms = forms.CharField(required=False, max_length=20)

    def __init__(self, data=None, *args, schema: list[dict], compare: bool, **kwargs):
        if data is not None and not data.get("action") and data.get(self.ACTION_ALIAS):
            data = data.copy()
            data["action"] = data[self.ACTION_ALIAS]
        super().__init__(data, *args, **kwargs)
        self.schema = schema or []
        self.compare = compare

    def clean_action(self) -> dict[str, Any]:
        action = self.cleaned_data["action"]
        if action in (Verdict.ACCEPT, Verdict.CORRECT, Verdict.REJECT, Verdict.SKIP):
            return {"verdict": action}
        if action == "tie":
            return {"verdict": Verdict.ACCEPT, "tie": True}
        if action.startswith(PREFER_PREFIX) and action[len(PREFER_PREFIX) :].isdigit():
            preferred = int(action[len(PREFER_PREFIX) :])
            return {"verdict": Verdict.ACCEPT, "preferred_candidate": preferred}
        raise forms.ValidationError("Unknown action.")

    def clean_candidate_order(self) -> list[int]:
        return _candidate_ids(self.cleaned_data["candidate_order"])

    def clean_time_spent_ms(self) -> int | None:
        # Measured by the page; a missing or garbled figure is dropped, not an error.
        value = self.cleaned_data["time_spent_ms"].strip()
        return int(value) if value.isdigit() else None

    def submit_kwargs(self) -> dict[str, Any]:
        """Arguments for ``review_submit`` (less item and expert)."""
        data = self.cleaned_data
        decision = data["action"]
        verdict = decision["verdict"]
        kwargs: dict[str, Any] = {
            "verdict": verdict,
            "preferred_candidate": decision.get("preferred_candidate"),
            "candidate": decision.get("preferred_candidate"),
            "tie": decision.get("tie", False),
            "rating": data["rating"] or None,
            "labels": labels_from_post(self.data, self.schema),
            "rationale": data["rationale"],
            "corrected_output": "",
            "time_spent_ms": data["time_spent_ms"],
            "candidate_order": data["candidate_order"] or None,
            "guideline_version": data["guideline_version"],
            "idempotency_key": data["idempotency_key"],
        }
        if verdict == Verdict.CORRECT:
            kwargs["corrected_output"] = data["corrected_output"]
            kwargs["candidate"] = data["correct_candidate"]
            if self.compare and data["correct_candidate"] is not None:
                kwargs["preferred_candidate"] = data["correct_candidate"]
        return kwargs

    def draft(self) -> dict[str, Any]:
        """What the expert typed, as sent (for re-rendering and for the lost-item box)."""
        return {
            "action": self.data.get("action", ""),
            "corrected_output": self.data.get("corrected_output", ""),
            "correct_candidate": self.data.get("correct_candidate", ""),
            "rating": self.data.get("rating", ""),
            "rationale": self.data.get("rationale", ""),
            "labels": labels_from_post(self.data, self.schema),
            "idempotency_key": self.data.get("idempotency_key", ""),
            "correcting": self.data.get("correcting") == "1"
            or bool(self.data.get("corrected_output")),
        }


class ReviewAmendForm(forms.Form):
    """An amendment of a counted decision (``review_amend``). ``preference`` is ``""``,
    ``"tie"`` or a candidate id."""

    verdict = forms.ChoiceField(
        choices=[(v, label) for v, label in Verdict.choices if v != Verdict.SKIP]
    )
    candidate = forms.IntegerField(required=False)
    corrected_output = forms.CharField(required=False, strip=False)
    preference = forms.CharField(required=False, max_length=20)
    rating = forms.CharField(required=False, max_length=8)
    rationale = forms.CharField(required=False, strip=False, max_length=RATIONALE_FIELD_MAX)

    def __init__(self, *args, schema: list[dict], multi: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.schema = schema or []
        self.multi = multi

    def clean_preference(self) -> dict[str, Any]:
        value = self.cleaned_data["preference"].strip()
        if value == "":
            return {"preferred_candidate": None, "tie": False}
        if value == "tie":
            return {"preferred_candidate": None, "tie": True}
        if value.isdigit():
            return {"preferred_candidate": int(value), "tie": False}
        raise forms.ValidationError("Choose an output, a tie, or no preference.")

    def amend_kwargs(self) -> dict[str, Any]:
        """Arguments for ``review_amend`` (less review and editor)."""
        data = self.cleaned_data
        changes: dict[str, Any] = {
            "verdict": data["verdict"],
            "corrected_output": data["corrected_output"]
            if data["verdict"] == Verdict.CORRECT
            else "",
            "rating": data["rating"] or None,
            "labels": labels_from_post(self.data, self.schema),
            "rationale": data["rationale"],
        }
        if self.multi:
            changes["candidate"] = data["candidate"]
            changes.update(data["preference"])
        return changes
