"""Reads for monitoring: per project and model version, over consecutive time windows.

For each model version (the reviewed candidate's ``model`` label; production records are
labelled ``model`` or ``model+adapter``) and each window:

- **volume**: production records received and sampled into the queue (ingestion API), and
  counted decisions on single outputs;
- **acceptance, correction and rejection rates** among those decisions;
- **mean normalised edit distance of corrections**: per correction,
  ``1 − difflib.SequenceMatcher(None, original words, corrected words).ratio()``, the share
  of words deleted or inserted out of both texts' words (0: unchanged, 1: nothing in
  common), averaged over at most ``EDIT_SAMPLE`` of the window's most recent corrections;
- **label distributions**: answers to each choice or rating question.

Windows are ``window_days`` long and end at the next midnight (site time zone); the newest
one is the drift test's current window (``feedback.services.drift``). Decisions that compare
two outputs and skips are left out, as in the drift test.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from curation.models import ProductionOutput, Project
from curation.services.ingest import model_version_label
from feedback.models import DriftAlert, Verdict
from feedback.services.drift import (
    DEFAULT_POLICY,
    MEASURED_TYPES,
    UNKNOWN_MODEL,
    DriftPolicy,
    Finding,
    Windows,
    drift_evaluate,
    drift_windows,
    label_category,
    monitored_reviews,
)

EDIT_SAMPLE = 200  # corrections per model and window whose edit distance is averaged
WINDOW_DAYS_RANGE = (1, 90)
WINDOW_COUNT_RANGE = (1, 52)
# Past this many words on both sides (after the common ends are set aside) difflib's
# popular-word heuristic is left on, so one comparison stays fast.
_EXACT_WORDS = 5_000


def normalised_edit_distance(original: str, corrected: str) -> float:
    """``1 − ratio`` of difflib's SequenceMatcher over the two texts' words (whitespace
    split): 0 when equal, 1 when no word is shared."""
    a, b = original.split(), corrected.split()
    if not a and not b:
        return 0.0
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end = 0
    while end < len(a) - start and end < len(b) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a_mid, b_mid = a[start : len(a) - end], b[start : len(b) - end]
    common = start + end
    if not a_mid or not b_mid:
        matched = common
    else:
        exact = len(a_mid) <= _EXACT_WORDS or len(b_mid) <= _EXACT_WORDS
        matcher = difflib.SequenceMatcher(None, a_mid, b_mid, autojunk=not exact)
        matched = common + sum(block.size for block in matcher.get_matching_blocks())
    return 1.0 - 2.0 * matched / (len(a) + len(b))


@dataclass
class WindowRow:
    model: str
    index: int  # 0: the newest window
    start: dt.datetime
    end: dt.datetime
    decisions: int = 0
    accept: int = 0
    correct: int = 0
    reject: int = 0
    received: int = 0  # production records (ingestion API)
    sampled: int = 0
    edit_distances: list[float] = field(default_factory=list)

    def rate(self, verdict: str) -> float | None:
        return getattr(self, verdict) / self.decisions if self.decisions else None

    @property
    def accept_rate(self) -> float | None:
        return self.rate("accept")

    @property
    def correct_rate(self) -> float | None:
        return self.rate("correct")

    @property
    def reject_rate(self) -> float | None:
        return self.rate("reject")

    @property
    def edit_distance(self) -> float | None:
        d = self.edit_distances
        return sum(d) / len(d) if d else None

    @property
    def edit_n(self) -> int:
        return len(self.edit_distances)


@dataclass
class LabelRow:
    model: str
    index: int
    start: dt.datetime
    end: dt.datetime
    counts: dict[str, int]
    n: int
    cells: list[tuple[str, int, float]]  # (category, count, share) in the table's order


@dataclass
class LabelTable:
    """Answers to one question: per (model, window) a count per category."""

    key: str
    prompt: str
    categories: list[str]
    rows: list[LabelRow]


@dataclass
class MonitoringReport:
    window_days: int
    windows: list[tuple[dt.datetime, dt.datetime]]  # newest first
    rows: list[WindowRow]  # by model, newest window first
    labels: list[LabelTable]
    findings: list[Finding]  # the drift tests of the newest window, as they stand now
    policy: DriftPolicy
    drift: Windows  # the drift test's current and baseline windows

    @property
    def models(self) -> list[str]:
        return sorted({row.model for row in self.rows})


def monitoring_report(
    *,
    project: Project,
    window_days: int = DEFAULT_POLICY.window_days,
    windows: int = 8,
    as_of: dt.datetime | None = None,
    policy: DriftPolicy = DEFAULT_POLICY,
) -> MonitoringReport:
    """The monitoring figures of ``project``: ``windows`` windows of ``window_days`` days,
    the newest ending at the next midnight after ``as_of``; plus the drift tests as they
    stand (over the policy's windows)."""
    tz = timezone.get_current_timezone()
    end = drift_windows(as_of=as_of, policy=policy).end
    end_date = timezone.localtime(end, tz).date()
    since = end - dt.timedelta(days=window_days * windows)
    bounds = [
        (end - dt.timedelta(days=window_days * (i + 1)), end - dt.timedelta(days=window_days * i))
        for i in range(windows)
    ]

    def index_of_day(day: dt.date) -> int:
        return ((end_date - day).days - 1) // window_days

    def index_of(moment: dt.datetime) -> int:
        return index_of_day(timezone.localtime(moment, tz).date())

    cells: dict[tuple[str, int], WindowRow] = {}

    def cell(model: str, index: int) -> WindowRow:
        key = (model or UNKNOWN_MODEL, index)
        if key not in cells:
            start, stop = bounds[index]
            cells[key] = WindowRow(model=key[0], index=index, start=start, end=stop)
        return cells[key]

    reviews = monitored_reviews(project=project, since=since, until=end)
    counts = (
        reviews.annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day", "candidate__model", "verdict")
        .annotate(n=Count("id"))
    )
    for row in counts:
        index = index_of_day(row["day"])
        if not 0 <= index < windows:
            continue
        target = cell(row["candidate__model"], index)
        target.decisions += row["n"]
        setattr(target, row["verdict"], getattr(target, row["verdict"]) + row["n"])

    volume = (
        ProductionOutput.objects.filter(
            project=project, received_at__gte=since, received_at__lt=end
        )
        .annotate(day=TruncDate("received_at", tzinfo=tz))
        .values("day", "model", "adapter")
        .annotate(n=Count("id"), sampled=Count("id", filter=Q(sampled=True)))
    )
    for row in volume:
        index = index_of_day(row["day"])
        if not 0 <= index < windows:
            continue
        target = cell(model_version_label(row["model"], row["adapter"]), index)
        target.received += row["n"]
        target.sampled += row["sampled"]

    corrections = (
        reviews.filter(verdict=Verdict.CORRECT)
        .order_by("-created_at", "-id")
        .values_list("candidate__model", "created_at", "candidate__output", "corrected_output")
    )
    for model, created_at, original, corrected in corrections.iterator(chunk_size=500):
        index = index_of(created_at)
        if not 0 <= index < windows:
            continue
        target = cell(model, index)
        if len(target.edit_distances) < EDIT_SAMPLE:
            target.edit_distances.append(normalised_edit_distance(original or "", corrected))

    labels = _label_tables(project, reviews, index_of, windows, bounds)
    drift, findings = drift_evaluate(project=project, as_of=as_of, policy=policy)
    rows = sorted(cells.values(), key=lambda r: (r.model, r.index))
    return MonitoringReport(
        window_days=window_days,
        windows=bounds,
        rows=rows,
        labels=labels,
        findings=findings,
        policy=policy,
        drift=drift,
    )


def _label_tables(project, reviews, index_of, windows: int, bounds) -> list[LabelTable]:
    questions = [q for q in (project.label_schema or []) if q.get("type") in MEASURED_TYPES]
    if not questions:
        return []
    counts: dict[str, dict[tuple[str, int], Counter]] = {
        q["key"]: defaultdict(Counter) for q in questions
    }
    rows = reviews.exclude(labels={}).values_list("candidate__model", "created_at", "labels")
    for model, created_at, answers in rows.iterator(chunk_size=5000):
        index = index_of(created_at)
        if not 0 <= index < windows:
            continue
        for question in questions:
            category = label_category(question, (answers or {}).get(question["key"]))
            if category is not None:
                counts[question["key"]][(model or UNKNOWN_MODEL, index)][category] += 1
    tables = []
    for question in questions:
        per_cell = counts[question["key"]]
        if not per_cell:
            continue
        declared = [str(o) for o in question.get("options", [])]
        if question["type"] == "rating":
            declared = [str(v) for v in range(1, question["scale"] + 1)]
        seen = {c for counter in per_cell.values() for c in counter}
        categories = [c for c in declared if c in seen] + sorted(seen - set(declared))
        tables.append(
            LabelTable(
                key=question["key"],
                prompt=question["prompt"],
                categories=categories,
                rows=[
                    LabelRow(
                        model=model,
                        index=index,
                        start=bounds[index][0],
                        end=bounds[index][1],
                        counts=dict(counter),
                        n=sum(counter.values()),
                        cells=[
                            (c, counter[c], counter[c] / sum(counter.values())) for c in categories
                        ],
                    )
                    for (model, index), counter in sorted(per_cell.items())
                ],
            )
        )
    return tables


def alerts_recent(*, project: Project) -> QuerySet[DriftAlert]:
    """The project's drift alerts, newest first."""
    return DriftAlert.objects.filter(project=project).order_by("-created_at", "-id")
