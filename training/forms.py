"""The dataset build form. It only parses: every rule is checked by
``training.services.datasets.params_clean``, whose errors come back onto these fields."""

from __future__ import annotations

from typing import Any

from django import forms

from feedback.models import OutcomeSource
from training.models import DatasetKind
from training.services.params import DEFAULTS

LABEL_PREFIX = "label__"


class DatasetBuildForm(forms.Form):
    kinds = forms.MultipleChoiceField(
        choices=DatasetKind.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=DEFAULTS["kinds"],
    )
    eval_fraction = forms.FloatField(
        label="Eval fraction",
        min_value=0,
        max_value=0.5,
        initial=DEFAULTS["eval_fraction"],
        widget=forms.NumberInput(attrs={"step": "0.01"}),
        help_text="Share of prompts held out for evaluation (by prompt: a prompt is never "
        "on both sides).",
    )
    seed = forms.IntegerField(
        min_value=0, initial=DEFAULTS["seed"], help_text="Same seed, same split."
    )
    outcomes = forms.MultipleChoiceField(
        label="Final outcome",
        choices=[("accepted", "Accepted (agreed or adjudicated)"), ("rejected", "Rejected")],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=DEFAULTS["outcomes"],
        help_text="Rejected outcomes add KTO rows labelled false, nothing else.",
    )
    sources = forms.MultipleChoiceField(
        label="Decided by",
        choices=OutcomeSource.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: all.",
    )
    min_agreement = forms.FloatField(
        label="Minimum agreement",
        required=False,
        min_value=0,
        max_value=1,
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "any"}),
    )
    date_from = forms.DateField(
        label="Decided from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="Decided until", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    models = forms.MultipleChoiceField(
        label="Outputs from models",
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 4}),
        help_text="None selected: all.",
    )
    gold = forms.ChoiceField(
        label="Gold items",
        choices=[("include", "Include"), ("exclude", "Leave out"), ("only", "Only gold items")],
        initial="include",
    )
    dedup = forms.BooleanField(
        label="Drop duplicate rows", required=False, initial=DEFAULTS["dedup"]
    )
    min_edit_chars = forms.IntegerField(
        label="Minimum edit (characters)",
        min_value=0,
        initial=DEFAULTS["min_edit_chars"],
        help_text="A correction makes a preference pair (and a KTO negative) only when it "
        "changes at least this many non-whitespace characters; 0: any change.",
    )
    system_prompt = forms.CharField(
        label="System prompt",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Added to conversational rows whose chat has none.",
    )

    def __init__(self, *args, models: list[str], label_schema: list[dict], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["models"].choices = [(m, m) for m in models]
        self.label_fields: list[str] = []
        for question in label_schema or []:
            if question["type"] in ("single_choice", "multiple_choice"):
                choices = [(o, o) for o in question["options"]]
            elif question["type"] == "rating":
                choices = [(str(n), str(n)) for n in range(1, question["scale"] + 1)]
            else:
                continue
            name = f"{LABEL_PREFIX}{question['key']}"
            self.fields[name] = forms.ChoiceField(
                label=question["prompt"], choices=[("", "any answer"), *choices], required=False
            )
            self.label_fields.append(name)

    @property
    def label_bound_fields(self) -> list:
        return [self[name] for name in self.label_fields]

    def params(self) -> dict[str, Any]:
        """The service's parameters from the cleaned data."""
        data = self.cleaned_data
        labels = {
            name.removeprefix(LABEL_PREFIX): data[name]
            for name in self.label_fields
            if data.get(name)
        }
        return {
            "kinds": data["kinds"],
            "eval_fraction": data["eval_fraction"],
            "seed": data["seed"],
            "outcomes": data["outcomes"],
            "sources": data["sources"],
            "min_agreement": data["min_agreement"],
            "date_from": data["date_from"],
            "date_to": data["date_to"],
            "models": data["models"],
            "labels": labels,
            "gold": data["gold"],
            "dedup": data["dedup"],
            "min_edit_chars": data["min_edit_chars"],
            "system_prompt": data["system_prompt"],
        }

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        for key, messages in errors.items():
            if key.startswith("labels."):
                key = LABEL_PREFIX + key.removeprefix("labels.")
            self.add_error(key if key in self.fields else None, messages)


class CompareForm(forms.Form):
    other = forms.TypedChoiceField(label="Compare with version", coerce=int)

    def __init__(self, *args, versions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["other"].choices = [
            (v.pk, f"#{v.pk} · {v.created_at:%Y-%m-%d %H:%M} · {v.short_sha}") for v in versions
        ]
