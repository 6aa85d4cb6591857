"""Forms of the Label Studio page. They only parse: every rule is in the services."""

from __future__ import annotations

from django import forms

from feedback.models import UnknownAnnotatorPolicy


class ConnectionForm(forms.Form):
    url = forms.CharField(label="Label Studio address", max_length=500)
    token = forms.CharField(
        label="API token",
        required=False,
        max_length=4096,
        widget=forms.PasswordInput(render_value=False),
        help_text="A personal access token or legacy token. Leave blank to keep the stored one.",
    )
    redline_url = forms.CharField(
        label="Redline's address, as Label Studio reaches it",
        max_length=500,
        required=False,
        help_text="For the webhook push registers, e.g. https://redline.example.com.",
    )
    unknown_annotators = forms.ChoiceField(
        label="Annotators who are not members of this project",
        choices=UnknownAnnotatorPolicy.choices,
        initial=UnknownAnnotatorPolicy.SKIP,
    )


class FileImportForm(forms.Form):
    file = forms.FileField(label="Label Studio JSON export")
