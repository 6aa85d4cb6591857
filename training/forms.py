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


# --------------------------------------------------------------------------------------------
# Training runs: the admin's "Train adapter…" page and "Train on another base model".


class AdminTrainForm(forms.Form):
    """The Django admin's launch form for one dataset version: base model, method and the
    whole config as JSON (prefilled with ``defaults_for`` the chosen method and model). It
    only parses: the settings are checked by ``training_run_create``, whose errors come back
    onto these fields (``add_service_errors``)."""

    base_model = forms.ModelChoiceField(queryset=None, empty_label=None)
    method = forms.ChoiceField(choices=())
    config = forms.CharField(
        label="Config (JSON)",
        widget=forms.Textarea(attrs={"rows": 24, "cols": 80, "spellcheck": "false"}),
        help_text="The run's settings, used as written; a key left out takes the default for "
        "the chosen method and model. After changing the model or the method, press "
        "“Load defaults” to refill this box with theirs.",
    )

    def __init__(self, data=None, *, methods: list[tuple[str, str]], **kwargs):
        from training.models import BaseModel

        super().__init__(data, **kwargs)
        self.fields["base_model"].queryset = BaseModel.objects.all()
        self.fields["method"].choices = methods

    def clean_config(self) -> dict:
        import json

        text = self.cleaned_data["config"].strip() or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from None
        if not isinstance(value, dict):
            raise forms.ValidationError(
                f"Must be a JSON object ({{…}}), got {type(value).__name__}."
            )
        return value

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        """Service errors onto the field they name: ``config.<setting>`` onto the config box
        (the message keeps the setting's name), ``method`` / ``base_model`` onto theirs,
        anything else (``dataset``) above the form, prefixed with its key."""
        for key, messages in errors.items():
            if key.startswith("config."):
                setting = key.removeprefix("config.")
                for message in messages:
                    text = message if message.startswith(setting) else f"{setting}: {message}"
                    self.add_error("config", text)
            elif key in ("method", "base_model"):
                self.add_error(key, messages)
            else:
                self.add_error(None, [f"{key}: {message}" for message in messages])


class RebaseForm(forms.Form):
    """ "Train on another base model": the base models other than the run's own."""

    base_model = forms.ModelChoiceField(
        queryset=None, empty_label=None, label="Base model", help_text=""
    )

    def __init__(self, data=None, *, run, **kwargs):
        from training.models import BaseModel

        super().__init__(data, **kwargs)
        self.fields["base_model"].queryset = BaseModel.objects.exclude(pk=run.base_model_id)
