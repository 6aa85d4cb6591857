"""Template helpers for the managers' quality pages: a server-side word diff, the rates-over-time
chart as inline SVG, and number formatting.

Everything here returns data for templates to render (autoescaped): model text, corrections and
model names never pass through ``mark_safe``. The chart carries no inline styles (the CSP
forbids them): colours and dash patterns come from classes in static/css/quality.css.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections import defaultdict
from dataclasses import dataclass

from django import template

register = template.Library()

# ---- Word diff ----------------------------------------------------------------------------

# A word, or a run of punctuation, with the whitespace after it (or leading whitespace):
# joining the tokens gives the text back exactly, and "Paris." → "Paris, France." shows as
# an insertion of ", France" rather than a whole word replaced.
_TOKEN = re.compile(r"\w+\s*|[^\w\s]+\s*|\s+")
# Past this many tokens on either side (after the common prefix and suffix are set aside)
# the word diff is skipped: the changed middle is shown as one deletion and one insertion.
DIFF_MAX_TOKENS = 50_000


@dataclass(frozen=True)
class DiffPiece:
    op: str  # "equal", "delete" or "insert"
    text: str


def word_diff_pieces(original: str, corrected: str) -> tuple[list[DiffPiece], bool]:
    """The word diff of ``corrected`` against ``original`` (difflib on word tokens), and
    whether it was simplified because the texts were too long to compare word by word."""
    a = _TOKEN.findall(original or "")
    b = _TOKEN.findall(corrected or "")
    # Corrections are usually local: take the common ends off before the quadratic part.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end = 0
    while end < len(a) - start and end < len(b) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a_mid, b_mid = a[start : len(a) - end], b[start : len(b) - end]
    pieces: list[DiffPiece] = []

    def add(op: str, tokens: list[str]) -> None:
        if not tokens:
            return
        text = "".join(tokens)
        if pieces and pieces[-1].op == op:
            pieces[-1] = DiffPiece(op, pieces[-1].text + text)
        else:
            pieces.append(DiffPiece(op, text))

    add("equal", a[:start])
    simplified = max(len(a_mid), len(b_mid)) > DIFF_MAX_TOKENS
    if simplified:
        add("delete", a_mid)
        add("insert", b_mid)
    else:
        matcher = difflib.SequenceMatcher(None, a_mid, b_mid)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                add("equal", a_mid[i1:i2])
            else:
                add("delete", a_mid[i1:i2])
                add("insert", b_mid[j1:j2])
    add("equal", a[len(a) - end :])
    return pieces, simplified


@register.inclusion_tag("feedback/partials/quality_word_diff.html")
def word_diff(original: str, corrected: str):
    """``{% word_diff original corrected %}``: the correction with deleted words in ``<del>``
    and inserted ones in ``<ins>``, every piece autoescaped."""
    pieces, simplified = word_diff_pieces(original, corrected)
    return {"pieces": pieces, "simplified": simplified}


# ---- Formatting ---------------------------------------------------------------------------

METHOD_LABELS = {
    "raw": "Raw agreement (share of agreeing pairs)",
    "alpha-nominal": "Krippendorff's α (nominal)",
    "alpha-ordinal": "Krippendorff's α (ordinal)",
}


@register.filter
def agreement_method(method: str) -> str:
    return METHOD_LABELS.get(method, method)


@register.filter
def percent(value) -> str:
    """0.4567 → "46%"; None → "—"."""
    if value is None:
        return "—"
    return f"{value * 100:.0f}%"


@register.filter
def duration(seconds) -> str:
    """Seconds as "42.5 s", "3 min 05 s" or "1 h 02 min"; None → "—"."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# ---- Rates over time chart ----------------------------------------------------------------

RATES = (
    ("accept", "Accepted"),
    ("correct", "Corrected"),
    ("reject", "Rejected"),
)
CHART_MAX_MODELS = 12
WIDTH, HEIGHT = 480, 240
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 12, 48
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


def _x(day: dt.date, first: dt.date, span: int) -> float:
    if span == 0:
        return LEFT + PLOT_W / 2
    return round(LEFT + (day - first).days / span * PLOT_W, 1)


def _y(rate: float) -> float:
    return round(TOP + (1 - rate) * PLOT_H, 1)


def rates_chart_context(points) -> dict:
    """Geometry for one small chart per model (the most reviewed first): a line per rate
    (accepted / corrected / rejected share of that day's decisions), shared axes."""
    points = list(points)
    if not points:
        return {"charts": [], "rows": [], "rates": RATES}
    by_model: dict[str, list] = defaultdict(list)
    for p in points:
        by_model[p.model].append(p)
    first = min(p.day for p in points)
    last = max(p.day for p in points)
    span = (last - first).days
    # The end labels hang inwards so that they stay inside the drawing.
    x_ticks = [
        {
            "x": _x(first, first, span),
            "label": first.isoformat(),
            "anchor": "start" if span else "middle",
        }
    ]
    if span >= 2:
        middle = first + dt.timedelta(days=span // 2)
        x_ticks.append(
            {"x": _x(middle, first, span), "label": middle.isoformat(), "anchor": "middle"}
        )
    if span >= 1:
        x_ticks.append({"x": _x(last, first, span), "label": last.isoformat(), "anchor": "end"})
    y_ticks = [{"y": _y(v / 100), "label": f"{v}%"} for v in (0, 25, 50, 75, 100)]
    models = sorted(by_model.items(), key=lambda kv: (-sum(p.total for p in kv[1]), kv[0]))
    charts = []
    for model, rows in models[:CHART_MAX_MODELS]:
        rows.sort(key=lambda p: p.day)
        series = []
        for verdict, label in RATES:
            markers = [
                {
                    "x": _x(p.day, first, span),
                    "y": _y(p.rate(verdict)),
                    "title": f"{p.day.isoformat()}: {label.lower()} {p.rate(verdict):.0%} "
                    f"({getattr(p, verdict)} of {p.total})",
                }
                for p in rows
            ]
            series.append(
                {
                    "verdict": verdict,
                    "label": label,
                    "points": " ".join(f"{m['x']},{m['y']}" for m in markers),
                    "markers": markers,
                }
            )
        charts.append({"model": model, "total": sum(p.total for p in rows), "series": series})
    return {
        "charts": charts,
        "hidden_models": max(0, len(models) - CHART_MAX_MODELS),
        "rows": [
            {
                "day": p.day,
                "model": p.model,
                "total": p.total,
                "counts": [(getattr(p, verdict), p.rate(verdict)) for verdict, _ in RATES],
            }
            for p in sorted(points, key=lambda p: (p.day, p.model), reverse=True)
        ],
        "rates": RATES,
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right_edge": WIDTH - RIGHT,
        "top": TOP,
        "bottom_edge": TOP + PLOT_H,
        "mid_x": LEFT + PLOT_W / 2,
        "mid_y": TOP + PLOT_H / 2,
        "x_label_y": HEIGHT - 6,
        "tick_label_y": TOP + PLOT_H + 18,
        "x_ticks": x_ticks,
        "y_ticks": y_ticks,
    }


@register.inclusion_tag("feedback/partials/quality_rates_chart.html")
def rates_chart(points):
    """``{% rates_chart rates %}`` with ``feedback.selectors.decision_rates`` rows: inline SVG
    small multiples (one per model), a legend, and the figures as a table for screen readers
    and for anyone who wants the numbers."""
    return rates_chart_context(points)


# ---- Decisions and outcomes ---------------------------------------------------------------


def _candidate_labels(candidates) -> dict[int, str]:
    return {
        c.pk: f"Output #{n} ({c.model or 'model not given'})"
        for n, c in enumerate(candidates, start=1)
    }


def _answer(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


@register.inclusion_tag("feedback/partials/quality_decision.html")
def decision_card(review, candidates, label_schema):
    """One expert's decision for a manager, with the expert's name: verdict, the output it is
    about, the correction as a word diff against that output, preference, rating, label answers
    (with the questions' prompts), rationale and how many revisions it went through."""
    candidates = list(candidates)
    labels = _candidate_labels(candidates)
    by_id = {c.pk: c for c in candidates}
    original = by_id.get(review.candidate_id) or (candidates[0] if candidates else None)
    prompts = {q["key"]: q["prompt"] for q in label_schema or []}
    answers = [
        {"question": prompts.get(key, key), "answer": _answer(value)}
        for key, value in (review.labels or {}).items()
    ]
    if review.tie:
        preference = "Tie"
    elif review.preferred_candidate_id:
        preference = labels.get(review.preferred_candidate_id, "another output")
    else:
        preference = ""
    return {
        "review": review,
        "about": labels.get(review.candidate_id, "") if len(candidates) > 1 else "",
        "original": original.output if original else "",
        "preference": preference,
        "answers": answers,
        "time_seconds": review.time_spent_ms / 1000 if review.time_spent_ms is not None else None,
    }


@register.inclusion_tag("feedback/partials/quality_outcome.html")
def outcome_summary(outcome, candidates):
    """An item's final decision: what, how it was reached, by whom, and the final text."""
    labels = _candidate_labels(candidates)
    if outcome is None:
        return {"outcome": None}
    if outcome.tie:
        preference = "Tie"
    elif outcome.preferred_candidate_id:
        preference = labels.get(outcome.preferred_candidate_id, "")
    else:
        preference = ""
    return {
        "outcome": outcome,
        "final_candidate": labels.get(outcome.final_candidate_id, ""),
        "preference": preference,
    }


@register.filter
def audit_details(details) -> list[tuple[str, str]]:
    """An audit event's details as (key, value) pairs for display."""
    if not isinstance(details, dict):
        return []
    return [
        (str(k).replace("_", " "), _answer(v)) for k, v in details.items() if v not in (None, "")
    ]
