import json

from django import forms

from curation.models import ItemStatus, OutcomeRule, ReviewMode, Role


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.EXPERT)


LABEL_SCHEMA_EXAMPLE = """[
  {"key": "tone", "prompt": "What is the tone of the answer?", "type": "single_choice",
   "options": ["neutral", "friendly", "rude"], "required": true},
  {"key": "issues", "prompt": "Which problems does it have?", "type": "multiple_choice",
   "options": ["factual error", "unsafe", "off topic"], "required": false},
  {"key": "helpfulness", "prompt": "How helpful is it?", "type": "rating", "scale": 5,
   "required": true},
  {"key": "notes", "prompt": "Anything else?", "type": "text", "required": false}
]"""


class ProjectSettingsForm(forms.Form):
    """Parses the settings page; the rules themselves live in services.settings."""

    review_modes = forms.MultipleChoiceField(
        choices=ReviewMode.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,  # the service says why an empty choice is refused
        help_text="What experts may do with an item.",
    )
    label_schema = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "code"}),
        required=False,
        help_text="A JSON list of questions; see the example below. Leave empty for none.",
    )
    overlap = forms.IntegerField(
        label="Overlap (k)", min_value=1, max_value=50, help_text="Reviews wanted per item."
    )
    lease_minutes = forms.IntegerField(
        label="Lease length (minutes)",
        min_value=1,
        max_value=24 * 60,
        help_text="How long an expert holds an item before it returns to the pool.",
    )
    blind = forms.BooleanField(
        label="Blind reviews",
        required=False,
        help_text="Experts never see each other's answers.",
    )
    outcome_rule = forms.ChoiceField(
        label="Outcome rule",
        choices=OutcomeRule.choices,
        help_text="How k reviews of an item become its final decision.",
    )
    ingest_sample_percent = forms.DecimalField(
        label="Production outputs sampled into the queue (%)",
        min_value=0,
        max_value=100,
        decimal_places=2,
        required=False,  # left out: unchanged
        help_text="Every record posted to the ingestion API is kept for monitoring; this "
        "share of them becomes items to review.",
    )
    ingest_low_confidence_first = forms.BooleanField(
        label="Least confident first",
        required=False,
        help_text="Sampled records that carry a confidence score are queued lowest first.",
    )

    @classmethod
    def initial_for(cls, project) -> dict:
        return {
            "review_modes": project.review_modes,
            "label_schema": json.dumps(project.label_schema, indent=2)
            if project.label_schema
            else "",
            "overlap": project.overlap,
            "lease_minutes": max(1, round(project.lease_seconds / 60)),
            "blind": project.blind,
            "outcome_rule": project.outcome_rule,
            "ingest_sample_percent": round(project.ingest_sample_fraction * 100, 2),
            "ingest_low_confidence_first": project.ingest_low_confidence_first,
        }

    def clean_label_schema(self):
        raw = self.cleaned_data["label_schema"].strip()
        if not raw:
            return []
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from None

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        arguments = {
            "review_modes": data["review_modes"],
            "label_schema": data["label_schema"],
            "overlap": data["overlap"],
            "lease_seconds": data["lease_minutes"] * 60,
            "blind": data["blind"],
            "outcome_rule": data["outcome_rule"],
            "ingest_low_confidence_first": data["ingest_low_confidence_first"],
        }
        if data.get("ingest_sample_percent") is not None:
            arguments["ingest_sample_fraction"] = float(data["ingest_sample_percent"]) / 100
        return arguments


class GuidelineForm(forms.Form):
    text = forms.CharField(
        label="Guidelines (markdown)",
        widget=forms.Textarea(attrs={"rows": 16}),
        strip=False,
    )


class ItemFilterForm(forms.Form):
    """The item browser's query string. Invalid values are reported, never silently dropped."""

    q = forms.CharField(label="Text", required=False, max_length=200)
    status = forms.ChoiceField(choices=[("", "Any status"), *ItemStatus.choices], required=False)
    model = forms.CharField(required=False, max_length=200)
    source = forms.CharField(required=False, max_length=32)
    created_from = forms.DateField(
        label="Created from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    created_to = forms.DateField(
        label="Created to", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self):
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            raise forms.ValidationError("“Created from” must not be after “Created to”.")
        return data


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        help_text="JSONL, CSV or a JSON array; see the format guide.",
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.ndjson,.csv,.json"}),
    )
    format = forms.ChoiceField(
        choices=[
            ("", "Detect from the file name"),
            ("jsonl", "JSONL (one object a line)"),
            ("csv", "CSV"),
            ("json", "JSON array"),
        ],
        required=False,
    )
