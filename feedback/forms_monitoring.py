"""Forms of the monitoring page: the window choice (query string) and the alert webhook."""

from __future__ import annotations

from django import forms

from feedback.monitoring import WINDOW_COUNT_RANGE, WINDOW_DAYS_RANGE
from feedback.services.drift import DEFAULT_POLICY

DEFAULT_WINDOWS = 8


class MonitoringQueryForm(forms.Form):
    """``?window_days=7&windows=8``; both optional. Bad values are reported, not ignored."""

    window_days = forms.IntegerField(
        label="Window (days)",
        min_value=WINDOW_DAYS_RANGE[0],
        max_value=WINDOW_DAYS_RANGE[1],
        required=False,
    )
    windows = forms.IntegerField(
        label="Windows",
        min_value=WINDOW_COUNT_RANGE[0],
        max_value=WINDOW_COUNT_RANGE[1],
        required=False,
    )

    def report_arguments(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "window_days": data.get("window_days") or DEFAULT_POLICY.window_days,
            "windows": data.get("windows") or DEFAULT_WINDOWS,
        }


class WebhookForm(forms.Form):
    ACTIONS = ("save", "rotate", "clear")

    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS], initial="save")
    url = forms.CharField(label="Webhook URL", max_length=500, required=False)
