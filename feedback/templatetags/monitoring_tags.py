"""Template helpers for the monitoring page. Data only: templates autoescape everything."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def last_day(end) -> dt.date | None:
    """The last day inside a window that ends (exclusive) at ``end``, a midnight."""
    if end is None:
        return None
    return (timezone.localtime(end) - dt.timedelta(days=1)).date()


@register.filter
def metric_name(metric: str) -> str:
    if metric == "non_accept_rate":
        return "Corrections + rejections"
    if metric.startswith("labels:"):
        return f"Label answers: {metric.removeprefix('labels:')}"
    return metric


@register.filter
def pvalue(value) -> str:
    if value is None:
        return "—"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"
