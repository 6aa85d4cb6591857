"""Forms for the managers' quality pages: adjudicating an item and setting its gold answer.

They only parse: choices are built from the item (its candidates, its experts' corrections,
the project's label questions) and the rules live in ``feedback.services``. Choice labels
carry untrusted text (model names, usernames); Django's widgets autoescape them.
"""

from __future__ import annotations

from django import forms

from feedback.models import Outcome, Verdict

FINAL_TEXT = "text"
NOTE_MAX_CHARS = 5_000


def _candidate_label(position: int, candidate) -> str:
    model = candidate.model or "model not given"
    return f"Output #{position} ({model})"


def _preference_choices(candidates) -> list[tuple[str, str]]:
    return [
        ("", "No preference"),
        *((str(c.pk), _candidate_label(n, c)) for n, c in enumerate(candidates, start=1)),
        ("tie", "Tie"),
    ]


def _parse_preference(value: str) -> dict:
    if value == "tie":
        return {"preferred_candidate": None, "tie": True}
    return {"preferred_candidate": int(value) if value else None, "tie": False}


class AdjudicationForm(forms.Form):
    """A manager's final decision. ``final_source`` says where the final text comes from: the
    textarea, one candidate's output as it is, or one expert's correction."""

    outcome = forms.ChoiceField(
        choices=[(Outcome.ACCEPTED, "Accepted"), (Outcome.REJECTED, "Rejected")],
        widget=forms.RadioSelect,
    )
    final_source = forms.ChoiceField(
        label="Final text",
        widget=forms.RadioSelect,
        required=False,
        help_text="Used when the outcome is accepted; a rejected item has no final text.",
    )
    final_text = forms.CharField(
        label="Final text (written or edited)",
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "true"}),
        required=False,
        strip=False,
    )
    preferred = forms.ChoiceField(label="Better output", required=False)
    note = forms.CharField(
        label="Note (why)",
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=NOTE_MAX_CHARS,
    )

    def __init__(self, *args, candidates, decisions, **kwargs):
        super().__init__(*args, **kwargs)
        self.candidates = list(candidates)
        by_id = {c.pk: c for c in self.candidates}
        self.corrections = {
            r.pk: r for r in decisions if r.verdict == Verdict.CORRECT and r.corrected_output
        }
        choices = [(FINAL_TEXT, "The text in the box below")]
        choices += [
            (f"candidate:{c.pk}", f"{_candidate_label(n, c)}, as it is")
            for n, c in enumerate(self.candidates, start=1)
        ]
        positions = {c.pk: n for n, c in enumerate(self.candidates, start=1)}
        for review in self.corrections.values():
            about = (
                f" of output #{positions[review.candidate_id]}"
                if review.candidate_id in by_id and len(self.candidates) > 1
                else ""
            )
            choices.append((f"review:{review.pk}", f"{review.expert.username}'s correction{about}"))
        self.fields["final_source"].choices = choices
        if len(self.candidates) >= 2:
            self.fields["preferred"].choices = _preference_choices(self.candidates)
        else:
            del self.fields["preferred"]

    @classmethod
    def initial_for(cls, *, outcome, candidates, decisions) -> dict:
        """Start from the current outcome (a manager overriding it) or, for an item waiting
        for adjudication, prefill the box with the first correction or the first output."""
        initial: dict = {"final_source": FINAL_TEXT}
        text = ""
        if outcome is not None and outcome.outcome in (Outcome.ACCEPTED, Outcome.REJECTED):
            initial["outcome"] = outcome.outcome
            initial["note"] = outcome.note
            text = outcome.final_text
        if outcome is not None:
            if outcome.tie:
                initial["preferred"] = "tie"
            elif outcome.preferred_candidate_id:
                initial["preferred"] = str(outcome.preferred_candidate_id)
        if not text:
            correction = next(
                (r.corrected_output for r in decisions if r.verdict == Verdict.CORRECT), ""
            )
            text = correction or (candidates[0].output if candidates else "")
        initial["final_text"] = text
        return initial

    def service_arguments(self) -> dict:
        """Keyword arguments for ``feedback.services.item_adjudicate`` (less item/manager)."""
        data = self.cleaned_data
        arguments = {
            "outcome": data["outcome"],
            "note": data.get("note") or "",
            **_parse_preference(data.get("preferred") or ""),
            "final_text": None,
            "final_candidate": None,
        }
        if data["outcome"] != Outcome.ACCEPTED:
            return arguments
        source = data.get("final_source") or FINAL_TEXT
        kind, _, pk = source.partition(":")
        if kind == "candidate":
            arguments["final_candidate"] = int(pk)
        elif kind == "review":
            review = self.corrections[int(pk)]
            arguments["final_text"] = review.corrected_output
            arguments["final_candidate"] = review.candidate_id
        else:
            written = data.get("final_text") or ""
            arguments["final_text"] = written
            # The written text replaces the output the manager preferred (or the only one).
            # A blank box names no output, so that the service asks for the text.
            if written.strip():
                if arguments["preferred_candidate"]:
                    arguments["final_candidate"] = arguments["preferred_candidate"]
                elif len(self.candidates) == 1:
                    arguments["final_candidate"] = self.candidates[0].pk
        return arguments

    def field_for_service_error(self, key: str) -> str | None:
        """The form field a ``ValidationError`` key from the service belongs to."""
        name = {
            "final_candidate": "final_source",
            "preferred_candidate": "preferred",
            "tie": "preferred",
        }.get(key, key)
        return name if name in self.fields else None


def _label_field(question) -> forms.Field | None:
    prompt = question["prompt"]
    if question["type"] == "single_choice":
        return forms.ChoiceField(
            label=prompt,
            required=False,
            choices=[("", "Not part of the gold answer"), *((o, o) for o in question["options"])],
        )
    if question["type"] == "multiple_choice":
        return forms.MultipleChoiceField(
            label=prompt,
            required=False,
            choices=[(o, o) for o in question["options"]],
            widget=forms.CheckboxSelectMultiple,
        )
    if question["type"] == "rating":
        return forms.TypedChoiceField(
            label=prompt,
            required=False,
            coerce=int,
            empty_value=None,
            choices=[
                ("", "Not part of the gold answer"),
                *((str(n), str(n)) for n in range(1, question["scale"] + 1)),
            ],
        )
    return None  # free text is not scored


class GoldForm(forms.Form):
    """The expected answer to an item: the verdict, the better output (items with two or
    more), and answers to the project's choice and rating questions."""

    LABEL_PREFIX = "label_"

    verdict = forms.ChoiceField(
        label="Expected verdict",
        choices=[
            (Verdict.ACCEPT, "Accept: the output is fine as it is"),
            (Verdict.CORRECT, "Correct: usable after an edit"),
            (Verdict.REJECT, "Reject"),
        ],
        widget=forms.RadioSelect,
    )
    preferred = forms.ChoiceField(label="Better output", required=False)
    note = forms.CharField(
        label="Note (managers only)",
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        max_length=NOTE_MAX_CHARS,
    )

    def __init__(self, *args, candidates, label_schema, **kwargs):
        super().__init__(*args, **kwargs)
        candidates = list(candidates)
        if len(candidates) >= 2:
            self.fields["preferred"].choices = _preference_choices(candidates)
        else:
            del self.fields["preferred"]
        note = self.fields.pop("note")
        self.label_keys: dict[str, str] = {}
        for question in label_schema or []:
            field = _label_field(question)
            if field is not None:
                name = f"{self.LABEL_PREFIX}{question['key']}"
                self.fields[name] = field
                self.label_keys[name] = question["key"]
        self.fields["note"] = note

    @property
    def label_fields(self):
        return [self[name] for name in self.label_keys]

    @classmethod
    def initial_for(cls, gold) -> dict:
        if gold is None:
            return {}
        initial = {"verdict": gold.verdict, "note": gold.note}
        if gold.tie:
            initial["preferred"] = "tie"
        elif gold.preferred_candidate_id:
            initial["preferred"] = str(gold.preferred_candidate_id)
        for key, value in (gold.labels or {}).items():
            initial[f"{cls.LABEL_PREFIX}{key}"] = str(value) if isinstance(value, int) else value
        return initial

    def service_arguments(self) -> dict:
        """Keyword arguments for ``feedback.services.gold_set`` (less item/actor)."""
        data = self.cleaned_data
        labels = {
            key: data[name]
            for name, key in self.label_keys.items()
            if data.get(name) not in (None, "", [])
        }
        return {
            "verdict": data["verdict"],
            "labels": labels,
            "note": data.get("note") or "",
            **_parse_preference(data.get("preferred") or ""),
        }

    def field_for_service_error(self, key: str) -> str | None:
        if key.startswith("labels."):
            name = f"{self.LABEL_PREFIX}{key.removeprefix('labels.')}"
            return name if name in self.fields else None
        if key in ("preferred_candidate", "tie"):
            return "preferred" if "preferred" in self.fields else None
        return key if key in self.fields else None
