"""DRF serializers for decisions. Input serializers check shapes and types only; every rule
(what a verdict needs, label answers against the project's schema, ranges) is the services'
job, so the API and the review page refuse the same things with the same messages."""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from feedback.models import Outcome, Verdict

TIE = "tie"

_PREFERENCE_SCHEMA = {
    "oneOf": [{"type": "integer"}, {"type": "string", "enum": [TIE]}],
    "nullable": True,
    "description": 'A candidate id, or "tie" when both outputs are equally good.',
}


@extend_schema_field(_PREFERENCE_SCHEMA)
class PreferenceField(serializers.Field):
    """A preference as the API spells it: a candidate id, ``"tie"``, or null (none).

    Read from a model instance (``source="*"``) with ``tie`` and ``preferred_candidate_id``.
    Parsed to ``"tie"``, an int or None; whether the id belongs to the item is the service's
    check."""

    default_error_messages = {"invalid": 'Give a candidate id or "tie".'}

    def to_internal_value(self, data):
        if data == TIE:
            return TIE
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            return data
        if isinstance(data, str) and data.strip().isdigit():
            return int(data)
        self.fail("invalid")

    def to_representation(self, value):
        if getattr(value, "tie", False):
            return TIE
        return getattr(value, "preferred_candidate_id", None)


def preference_kwargs(value) -> dict:
    """``preferred_candidate`` / ``tie`` keyword arguments for the services from a parsed
    preference (``"tie"``, an id or None)."""
    if value == TIE:
        return {"preferred_candidate": None, "tie": True}
    return {"preferred_candidate": value, "tie": False}


# ---- Reviews ------------------------------------------------------------------------------


class ReviewSubmitInputSerializer(serializers.Serializer):
    """POST body of a decision. Which fields a verdict needs is checked by the service, and
    its errors are keyed by these names (label answers as ``labels.<question key>``)."""

    verdict = serializers.ChoiceField(choices=Verdict.choices)
    candidate = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The candidate the verdict is about (needed when the item has several and "
        "no preference says which).",
    )
    corrected_output = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        default="",
        help_text="The corrected text (verdict correct only).",
    )
    preferred_candidate = PreferenceField(required=False, allow_null=True, default=None)
    rating = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="Overall rating, 1..5."
    )
    labels = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        default=dict,
        help_text="Answers to the project's label questions: {question key: answer}.",
    )
    rationale = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False, default=""
    )
    time_spent_ms = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, default=None
    )
    candidate_order = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        default=list,
        help_text="Candidate ids in the order they were shown (default: stored order).",
    )
    guideline_version = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The guideline version number shown to the expert (default: the current).",
    )
    idempotency_key = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=100,
        default="",
        help_text="A retry with the same key returns the first review instead of a second.",
    )
    claim_next = serializers.BooleanField(
        required=False,
        default=False,
        help_text='Also claim your next item and return it as "next" (saves a round trip).',
    )


_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # what DRF's CharField validators refuse


def _plain_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_text(value) -> bool:
    return isinstance(value, str) and not _BAD_TEXT.search(value)


def review_submit_input(data) -> dict | None:
    """``ReviewSubmitInputSerializer(data=data).validated_data`` without building the
    serializer, for the review hot path; None when ``data`` is not a plain JSON object whose
    every field has its plain type (the caller then runs the serializer, which gives the
    answer and the errors). It accepts nothing the serializer refuses and returns what the
    serializer returns (tests/feedback/test_api_fast_path.py holds the two side by side)."""
    if type(data) is not dict:  # a JSON body; forms (QueryDict) take the serializer
        return None
    verdict = data.get("verdict")
    if not isinstance(verdict, str) or verdict not in Verdict.values:
        return None
    out = {"verdict": verdict}
    for name in ("candidate", "rating", "guideline_version"):
        value = data.get(name)
        if value is not None and not _plain_int(value):
            return None
        out[name] = value
    for name in ("corrected_output", "rationale"):
        value = data.get(name, "")
        if value is not None and not _plain_text(value):
            return None
        out[name] = value
    preference = data.get("preferred_candidate")
    if not (preference is None or preference == TIE or _plain_int(preference)):
        return None
    out["preferred_candidate"] = preference
    labels = data.get("labels", _MISSING)
    if labels is _MISSING:
        labels = {}
    elif type(labels) is not dict:
        return None
    out["labels"] = labels
    spent = data.get("time_spent_ms")
    if spent is not None and not (_plain_int(spent) and spent >= 0):
        return None
    out["time_spent_ms"] = spent
    order = data.get("candidate_order", _MISSING)
    if order is _MISSING:
        order = []
    elif type(order) is not list or not all(_plain_int(v) for v in order):
        return None
    out["candidate_order"] = order
    key = data.get("idempotency_key", "")
    if not _plain_text(key):
        return None
    key = key.strip()
    if len(key) > 100:
        return None
    out["idempotency_key"] = key
    claim_next = data.get("claim_next", False)
    if not isinstance(claim_next, bool):
        return None
    out["claim_next"] = claim_next
    return out


_MISSING = object()


class ReviewAmendInputSerializer(serializers.Serializer):
    """PATCH body: the decision fields to change; the others keep their value."""

    verdict = serializers.ChoiceField(
        choices=Verdict.choices, required=False, help_text="Not skip: a skip cannot be amended."
    )
    candidate = serializers.IntegerField(required=False, allow_null=True)
    corrected_output = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False
    )
    preferred_candidate = PreferenceField(required=False, allow_null=True)
    rating = serializers.IntegerField(required=False, allow_null=True)
    labels = serializers.DictField(child=serializers.JSONField(), required=False)
    rationale = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False
    )


class ReviewOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    item = serializers.IntegerField(source="item_id", read_only=True)
    expert = serializers.CharField(source="expert.username", read_only=True)
    verdict = serializers.ChoiceField(choices=Verdict.choices, read_only=True)
    candidate = serializers.IntegerField(source="candidate_id", allow_null=True, read_only=True)
    corrected_output = serializers.CharField(read_only=True)
    preferred_candidate = PreferenceField(source="*", read_only=True)
    rating = serializers.IntegerField(allow_null=True, read_only=True)
    labels = serializers.DictField(child=serializers.JSONField(), read_only=True)
    rationale = serializers.CharField(read_only=True)
    time_spent_ms = serializers.IntegerField(allow_null=True, read_only=True)
    candidate_order = serializers.ListField(child=serializers.IntegerField(), read_only=True)
    guideline_version = serializers.IntegerField(
        source="guideline_version.version",
        allow_null=True,
        read_only=True,
        help_text="The guideline version number the expert was shown.",
    )
    revision = serializers.IntegerField(
        read_only=True,
        help_text="The latest revision's number; revisions count from 1, so also how many "
        "there are (1: never amended).",
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


_DATETIME = serializers.DateTimeField()


def review_payload(review) -> dict:
    """``ReviewOutputSerializer(review).data`` built by hand for the submit hot path (the
    serializer's field copies cost more than the submit's SQL); reads ``review.expert`` and
    ``review.guideline_version`` as the serializer does. tests/feedback/test_api_fast_path.py
    holds the two side by side."""
    guideline = review.guideline_version
    return {
        "id": review.pk,
        "item": review.item_id,
        "expert": review.expert.username,
        "verdict": review.verdict,
        "candidate": review.candidate_id,
        "corrected_output": review.corrected_output,
        "preferred_candidate": TIE if review.tie else review.preferred_candidate_id,
        "rating": review.rating,
        "labels": dict(review.labels),
        "rationale": review.rationale,
        "time_spent_ms": review.time_spent_ms,
        "candidate_order": [None if v is None else int(v) for v in review.candidate_order],
        "guideline_version": guideline.version if guideline is not None else None,
        "revision": review.revision,
        "created_at": _DATETIME.to_representation(review.created_at),
        "updated_at": _DATETIME.to_representation(review.updated_at),
    }


class RevisionOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField(read_only=True)
    editor = serializers.CharField(source="editor.username", read_only=True)
    changed = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Fields that differ from the revision before (empty for revision 1).",
    )
    data = serializers.DictField(
        child=serializers.JSONField(), read_only=True, help_text="Every decision field as saved."
    )
    created_at = serializers.DateTimeField(read_only=True)


class ReviewDetailOutputSerializer(ReviewOutputSerializer):
    """A review with its history; the revisions come in ``context["revisions"]``."""

    revisions = serializers.SerializerMethodField()

    @extend_schema_field(RevisionOutputSerializer(many=True))
    def get_revisions(self, obj) -> list[dict]:
        return RevisionOutputSerializer(self.context["revisions"], many=True).data


# ---- Outcomes and adjudication ------------------------------------------------------------


class AdjudicateInputSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=[Outcome.ACCEPTED, Outcome.REJECTED])
    final_text = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        trim_whitespace=False,
        default=None,
        help_text="The final text (accepted); leave out to keep final_candidate's output.",
    )
    final_candidate = serializers.IntegerField(required=False, allow_null=True, default=None)
    preferred_candidate = PreferenceField(required=False, allow_null=True, default=None)
    note = serializers.CharField(required=False, allow_blank=True, default="")


class OutcomeOutputSerializer(serializers.Serializer):
    item = serializers.IntegerField(source="item_id", read_only=True)
    outcome = serializers.ChoiceField(choices=Outcome.choices, read_only=True)
    source = serializers.CharField(
        read_only=True, help_text="unanimous, majority or adjudicated (by a manager)."
    )
    final_text = serializers.CharField(read_only=True)
    final_candidate = serializers.IntegerField(
        source="final_candidate_id", allow_null=True, read_only=True
    )
    preferred_candidate = PreferenceField(source="*", read_only=True)
    tie = serializers.BooleanField(read_only=True)
    agreement = serializers.FloatField(
        allow_null=True,
        read_only=True,
        help_text="Share of the counted reviews that match the outcome.",
    )
    review_count = serializers.IntegerField(read_only=True)
    decided_by = serializers.CharField(
        source="decided_by.username",
        allow_null=True,
        read_only=True,
        help_text="The adjudicating manager (null when the experts' reviews decided).",
    )
    decided_at = serializers.DateTimeField(read_only=True)
    note = serializers.CharField(read_only=True)


# ---- Gold answers -------------------------------------------------------------------------


class GoldInputSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(
        choices=Verdict.choices,
        help_text="What the output deserves: accept, correct (usable after an edit) or reject.",
    )
    preferred_candidate = PreferenceField(required=False, allow_null=True, default=None)
    labels = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)
    note = serializers.CharField(required=False, allow_blank=True, default="")


class GoldOutputSerializer(serializers.Serializer):
    item = serializers.IntegerField(source="item_id", read_only=True)
    verdict = serializers.CharField(read_only=True)
    preferred_candidate = PreferenceField(source="*", read_only=True)
    labels = serializers.DictField(child=serializers.JSONField(), read_only=True)
    note = serializers.CharField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


# ---- Agreement ----------------------------------------------------------------------------


class AgreementFigureSerializer(serializers.Serializer):
    key = serializers.CharField(
        read_only=True, help_text="verdict, preference, rating or a label question's key."
    )
    label = serializers.CharField(read_only=True)
    method = serializers.ChoiceField(
        choices=["raw", "alpha-nominal", "alpha-ordinal"],
        read_only=True,
        help_text="raw: share of agreeing pairs of experts; alpha: Krippendorff's alpha.",
    )
    value = serializers.FloatField(
        allow_null=True, read_only=True, help_text="Null when there is too little data."
    )
    items = serializers.IntegerField(
        read_only=True, help_text="How many items (with two or more answers) it rests on."
    )
    note = serializers.CharField(read_only=True, help_text="Why the value is null, if it is.")


class AgreementOutputSerializer(serializers.Serializer):
    items_with_overlap = serializers.IntegerField(
        read_only=True, help_text="Items with two or more counted reviews."
    )
    figures = AgreementFigureSerializer(many=True, read_only=True)
