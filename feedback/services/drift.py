"""Drift detection: has one model version's output got worse in the experts' eyes?

Per project and model version (the reviewed candidate's ``model`` label), the **current
window** (the last ``window_days`` days, up to the end of today in the site's time zone) is
compared with the **baseline window** (the ``baseline_days`` days before it):

- **Correction or rejection rate.** The share of counted decisions that corrected or rejected
  the output, compared with a one-sided two-proportion z-test (pooled variance; H1: the
  current rate is higher). Runs when each window has at least ``min_n`` decisions (30) and
  the pooled rate is neither 0 nor 1.
- **Label distribution.** For each choice or rating question of the label schema, the answers
  in the two windows form a 2 × K table tested with Pearson's chi-square test of homogeneity
  (df = K − 1). Answers whose expected count would fall below 5 in either window are pooled
  into one "(other)" category first (Cochran's rule); the test runs when each window has at
  least ``min_n`` answers and two or more categories remain. A multiple-choice answer counts
  as one category: the set of options chosen.

An alert fires when p < ``alpha`` (0.01). Decisions that compare two outputs (a preference or
a tie) are left out: they say which output is better, not whether one is acceptable. Skips
are left out too.

``drift_check`` writes at most one ``DriftAlert`` per (project, model, metric, window end), so
it can run every hour, or twice at once, without repeating itself; and it does not alert again
on a model and metric whose previous alert's window overlaps this one (at most one alert per
window length while a drift persists). New alerts are sent to the project's webhook by the
``feedback.alert_deliver`` task, queued after commit.

No SciPy: the normal tail is ``math.erfc`` and the chi-square tail is the regularized upper
incomplete gamma function, computed below (series / continued fraction, as in Numerical
Recipes ``gammq``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from curation.models import Project
from feedback.models import DriftAlert, DriftMetric, Review, Verdict

UNKNOWN_MODEL = "(unknown model)"
OTHER = "(other)"
MIN_EXPECTED = 5.0  # Cochran: every expected cell count at least 5
MEASURED_TYPES = ("single_choice", "multiple_choice", "rating")


@dataclass(frozen=True)
class DriftPolicy:
    window_days: int = 7
    baseline_days: int = 28
    min_n: int = 30  # decisions (or answers) needed in each window before a test runs
    alpha: float = 0.01


DEFAULT_POLICY = DriftPolicy()


# ---- Statistics -----------------------------------------------------------------------------


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_z_test(
    *, x_base: int, n_base: int, x_cur: int, n_cur: int
) -> tuple[float, float]:
    """One-sided two-proportion z-test with pooled variance, H1: the current proportion is
    higher. Returns ``(z, p)``; ``(0.0, 1.0)`` when the pooled proportion is 0 or 1 (no
    variation to test)."""
    if n_base <= 0 or n_cur <= 0:
        raise ValueError("Both samples need at least one observation.")
    pooled = (x_base + x_cur) / (n_base + n_cur)
    variance = pooled * (1 - pooled) * (1 / n_base + 1 / n_cur)
    if variance <= 0:
        return 0.0, 1.0
    z = (x_cur / n_cur - x_base / n_base) / math.sqrt(variance)
    return z, normal_sf(z)


def _gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its series (converges fast for x < a+1)."""
    term = total = 1.0 / a
    ap = a
    for _ in range(10_000):
        ap += 1
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_continued_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by its continued fraction (modified Lentz;
    converges fast for x ≥ a+1)."""
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X chi-square distributed with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError("df must be positive.")
    if x <= 0:
        return 1.0
    a, half = df / 2, x / 2
    if half < a + 1:
        return max(0.0, 1.0 - _gamma_series(a, half))
    return _gamma_continued_fraction(a, half)


@dataclass(frozen=True)
class ChiSquareResult:
    statistic: float
    df: int
    p_value: float
    categories: list[str]  # after pooling
    baseline: list[int]
    current: list[int]


def chi_square_homogeneity(
    baseline: dict[str, int], current: dict[str, int]
) -> ChiSquareResult | None:
    """Pearson's chi-square test that two samples of categories share one distribution.

    Categories whose expected count falls below ``MIN_EXPECTED`` in either sample are pooled
    into ``OTHER`` (and that pool into the next smallest category if it is still too small).
    None when fewer than two categories remain."""
    n_base, n_cur = sum(baseline.values()), sum(current.values())
    if n_base == 0 or n_cur == 0:
        return None
    total = n_base + n_cur
    keys = sorted(k for k in set(baseline) | set(current) if baseline.get(k, 0) + current.get(k, 0))

    def small(count: int) -> bool:
        return min(n_base, n_cur) * count / total < MIN_EXPECTED

    cells = {k: [baseline.get(k, 0), current.get(k, 0)] for k in keys}
    pooled = [0, 0]
    for key in [k for k in keys if small(sum(cells[k]))]:
        b, c = cells.pop(key)
        pooled[0] += b
        pooled[1] += c
    while sum(pooled) and small(sum(pooled)) and cells:
        smallest = min(cells, key=lambda k: (sum(cells[k]), k))
        b, c = cells.pop(smallest)
        pooled[0] += b
        pooled[1] += c
    if sum(pooled):
        cells[OTHER] = pooled
    if len(cells) < 2:
        return None
    statistic = 0.0
    for b, c in cells.values():
        column = b + c
        for observed, row_total in ((b, n_base), (c, n_cur)):
            expected = row_total * column / total
            statistic += (observed - expected) ** 2 / expected
    df = len(cells) - 1
    names = list(cells)
    return ChiSquareResult(
        statistic=statistic,
        df=df,
        p_value=chi2_sf(statistic, df),
        categories=names,
        baseline=[cells[k][0] for k in names],
        current=[cells[k][1] for k in names],
    )


# ---- Windows and data -----------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    baseline_start: dt.datetime
    baseline_end: dt.datetime  # = start
    start: dt.datetime
    end: dt.datetime


def drift_windows(*, as_of: dt.datetime | None = None, policy: DriftPolicy = DEFAULT_POLICY):
    """The current window ends at the next midnight after ``as_of`` (site time zone) and
    spans ``window_days``; the baseline is the ``baseline_days`` before it."""
    as_of = as_of or timezone.now()
    tz = timezone.get_current_timezone()
    day = timezone.localtime(as_of, tz).date() + dt.timedelta(days=1)
    end = timezone.make_aware(dt.datetime.combine(day, dt.time.min), tz)
    start = end - dt.timedelta(days=policy.window_days)
    return Windows(
        baseline_start=start - dt.timedelta(days=policy.baseline_days),
        baseline_end=start,
        start=start,
        end=end,
    )


def monitored_reviews(*, project: Project, since: dt.datetime, until: dt.datetime):
    """Counted decisions on single outputs in [since, until): what monitoring measures."""
    return Review.objects.filter(
        project=project,
        created_at__gte=since,
        created_at__lt=until,
        preferred_candidate__isnull=True,
        tie=False,
        verdict__in=[Verdict.ACCEPT, Verdict.CORRECT, Verdict.REJECT],
    )


def label_category(question: dict, answer: Any) -> str | None:
    """One answer to a measured question as a category name (None: unanswered or not
    measured). A multiple-choice answer is the set chosen, sorted, joined with " | "."""
    if question.get("type") not in MEASURED_TYPES or answer in (None, "", []):
        return None
    if isinstance(answer, list):
        return " | ".join(sorted(str(a) for a in answer))
    return str(answer)


@dataclass
class Finding:
    """One test of one model version and metric."""

    model: str
    metric: str
    baseline_n: int
    current_n: int
    baseline_value: float | None
    current_value: float | None
    statistic: float | None  # None: not tested (too little data)
    p_value: float | None
    significant: bool
    note: str = ""
    details: dict = field(default_factory=dict)


def _rate_findings(project, windows: Windows, policy: DriftPolicy) -> list[Finding]:
    bad = [Verdict.CORRECT, Verdict.REJECT]
    base = Q(created_at__lt=windows.start)
    cur = Q(created_at__gte=windows.start)
    rows = (
        monitored_reviews(project=project, since=windows.baseline_start, until=windows.end)
        .values("candidate__model")
        .annotate(
            base_n=Count("id", filter=base),
            base_bad=Count("id", filter=base & Q(verdict__in=bad)),
            cur_n=Count("id", filter=cur),
            cur_bad=Count("id", filter=cur & Q(verdict__in=bad)),
        )
    )
    merged: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        model = row.pop("candidate__model") or UNKNOWN_MODEL
        merged[model].update(row)
    findings = []
    for model, c in sorted(merged.items()):
        if not c["cur_n"]:
            continue
        finding = Finding(
            model=model,
            metric=DriftMetric.NON_ACCEPT_RATE,
            baseline_n=c["base_n"],
            current_n=c["cur_n"],
            baseline_value=c["base_bad"] / c["base_n"] if c["base_n"] else None,
            current_value=c["cur_bad"] / c["cur_n"],
            statistic=None,
            p_value=None,
            significant=False,
            details={
                "test": "two-proportion z-test, one-sided (pooled)",
                "baseline_count": c["base_bad"],
                "current_count": c["cur_bad"],
            },
        )
        if min(c["base_n"], c["cur_n"]) < policy.min_n:
            finding.note = f"needs {policy.min_n} decisions in each window"
        else:
            z, p = two_proportion_z_test(
                x_base=c["base_bad"], n_base=c["base_n"], x_cur=c["cur_bad"], n_cur=c["cur_n"]
            )
            finding.statistic, finding.p_value = z, p
            finding.significant = p < policy.alpha
        findings.append(finding)
    return findings


def _label_findings(project, windows: Windows, policy: DriftPolicy) -> list[Finding]:
    questions = [q for q in (project.label_schema or []) if q.get("type") in MEASURED_TYPES]
    if not questions:
        return []
    # (model, question key) -> [baseline Counter, current Counter]
    tables: dict[tuple[str, str], list[Counter]] = defaultdict(lambda: [Counter(), Counter()])
    rows = (
        monitored_reviews(project=project, since=windows.baseline_start, until=windows.end)
        .exclude(labels={})
        .values_list("candidate__model", "created_at", "labels")
    )
    for model, created_at, labels in rows.iterator(chunk_size=5000):
        side = 1 if created_at >= windows.start else 0
        for question in questions:
            category = label_category(question, (labels or {}).get(question["key"]))
            if category is not None:
                tables[(model or UNKNOWN_MODEL, question["key"])][side][category] += 1
    findings = []
    for (model, key), (base, cur) in sorted(tables.items()):
        n_base, n_cur = sum(base.values()), sum(cur.values())
        if not n_cur:
            continue
        distance = (
            0.5 * sum(abs(base[k] / n_base - cur[k] / n_cur) for k in set(base) | set(cur))
            if n_base
            else None
        )
        finding = Finding(
            model=model,
            metric=DriftMetric.LABELS_PREFIX + key,
            baseline_n=n_base,
            current_n=n_cur,
            baseline_value=None,
            current_value=distance,  # total variation distance between the two distributions
            statistic=None,
            p_value=None,
            significant=False,
            details={
                "test": "chi-square test of homogeneity",
                "baseline": dict(sorted(base.items())),
                "current": dict(sorted(cur.items())),
            },
        )
        result = chi_square_homogeneity(base, cur) if min(n_base, n_cur) >= policy.min_n else None
        if min(n_base, n_cur) < policy.min_n:
            finding.note = f"needs {policy.min_n} answers in each window"
        elif result is None:
            finding.note = "fewer than two answer categories with enough data"
        else:
            finding.statistic, finding.p_value = result.statistic, result.p_value
            finding.significant = result.p_value < policy.alpha
            finding.details["df"] = result.df
            finding.details["categories"] = result.categories
        findings.append(finding)
    return findings


def drift_evaluate(
    *, project: Project, as_of: dt.datetime | None = None, policy: DriftPolicy = DEFAULT_POLICY
) -> tuple[Windows, list[Finding]]:
    """Every model version's tests for the window ending after ``as_of``; writes nothing."""
    windows = drift_windows(as_of=as_of, policy=policy)
    findings = _rate_findings(project, windows, policy) + _label_findings(project, windows, policy)
    return windows, findings


# ---- Alerts ---------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _message(finding: Finding, windows: Windows, policy: DriftPolicy) -> str:
    baseline = f"{windows.baseline_start:%Y-%m-%d} to {windows.baseline_end - dt.timedelta(days=1):%Y-%m-%d}"
    current = f"{windows.start:%Y-%m-%d} to {windows.end - dt.timedelta(days=1):%Y-%m-%d}"
    if finding.metric == DriftMetric.NON_ACCEPT_RATE:
        return (
            f"Corrections and rejections of {finding.model} rose from "
            f"{_pct(finding.baseline_value)} (n={finding.baseline_n}, {baseline}) to "
            f"{_pct(finding.current_value)} (n={finding.current_n}, {current}); "
            f"one-sided z = {finding.statistic:.2f}, p = {finding.p_value:.2g} < {policy.alpha}."
        )
    key = finding.metric.removeprefix(DriftMetric.LABELS_PREFIX)
    return (
        f"Answers to {key!r} on {finding.model} shifted: total variation distance "
        f"{finding.current_value:.2f} between {baseline} (n={finding.baseline_n}) and "
        f"{current} (n={finding.current_n}); chi-square = {finding.statistic:.1f} "
        f"(df={finding.details.get('df')}), p = {finding.p_value:.2g} < {policy.alpha}."
    )


def drift_check_project(
    *, project: Project, as_of: dt.datetime | None = None, policy: DriftPolicy = DEFAULT_POLICY
) -> list[DriftAlert]:
    """Test every model version of ``project`` and record an alert for each significant
    finding; returns the alerts created by this call (none when they already exist).

    Safe to run repeatedly and concurrently: the unique (project, model, metric, window end)
    constraint lets one writer win (``get_or_create`` reads the winner's row). A model and
    metric whose latest alert's window overlaps this window is not alerted again. Each new
    alert's webhook delivery is queued after the surrounding transaction commits.
    """
    from feedback.services.alerts import alert_delivery_queue

    now = timezone.now()
    windows, findings = drift_evaluate(project=project, as_of=as_of, policy=policy)
    created_alerts = []
    for finding in findings:
        if not finding.significant:
            continue
        if (
            DriftAlert.objects.filter(
                project=project,
                model=finding.model,
                metric=finding.metric,
                window_end__gt=windows.start,
            )
            .exclude(window_end=windows.end)
            .exists()
        ):
            continue  # the same drift, alerted within the last window length
        alert, created = DriftAlert.objects.get_or_create(
            project=project,
            model=finding.model,
            metric=finding.metric,
            window_end=windows.end,
            defaults={
                "window_start": windows.start,
                "baseline_start": windows.baseline_start,
                "baseline_end": windows.baseline_end,
                "baseline_value": finding.baseline_value,
                "current_value": finding.current_value,
                "baseline_n": finding.baseline_n,
                "current_n": finding.current_n,
                "statistic": finding.statistic,
                "p_value": finding.p_value,
                "details": {**finding.details, "alpha": policy.alpha, "min_n": policy.min_n},
                "message": _message(finding, windows, policy),
                "created_at": now,
            },
        )
        if created:
            created_alerts.append(alert)
            alert_delivery_queue(alert=alert)
    return created_alerts


def drift_check(
    *, as_of: dt.datetime | None = None, policy: DriftPolicy = DEFAULT_POLICY
) -> list[DriftAlert]:
    """``drift_check_project`` for every project with decisions in the current window (the
    periodic task ``feedback.drift_check``). Returns the alerts created."""
    windows = drift_windows(as_of=as_of, policy=policy)
    # One index probe per project (review_project_created), not a scan of every review.
    active = Review.objects.filter(
        project=OuterRef("pk"), created_at__gte=windows.start, created_at__lt=windows.end
    )
    alerts = []
    for project in Project.objects.filter(Exists(active)).order_by("pk"):
        alerts += drift_check_project(project=project, as_of=as_of, policy=policy)
    return alerts
