"""Reads for decisions: visibility, agreement, per-expert figures, adjudication, trends."""

from __future__ import annotations

import datetime as dt
import hashlib
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from curation.models import Item, Project
from feedback.models import (
    AuditEvent,
    GoldAnswer,
    ItemOutcome,
    Outcome,
    Review,
    ReviewRevision,
    Verdict,
)
from feedback.services.gold import gold_matches
from feedback.services.outcomes import review_class

# ---- Visibility ---------------------------------------------------------------------------


def reviews_visible(*, item: Item, user, role: str) -> QuerySet[Review]:
    """The reviews of ``item`` that ``user`` (whose project role is ``role``) may read.

    Managers and admins: all. Experts: their own; in a project with blind mode off, also the
    others' once they have decided the item themselves. Blind mode on (the default): never
    anyone else's, through any page or endpoint.
    """
    reviews = Review.objects.filter(item=item).select_related("expert", "guideline_version")
    if role in ("manager", "admin"):
        return reviews.order_by("created_at", "id")
    project = item.project
    own = reviews.filter(expert=user)
    if not project.blind and own.exclude(verdict=Verdict.SKIP).exists():
        return reviews.order_by("created_at", "id")
    return own.order_by("created_at", "id")


def review_revisions(*, review: Review) -> QuerySet[ReviewRevision]:
    return review.revisions.select_related("editor").order_by("number")


def review_recent_for_expert(*, project: Project, expert, limit: int = 20) -> QuerySet[Review]:
    """The expert's latest decisions in the project, newest first ("Previous")."""
    return (
        Review.objects.filter(project=project, expert=expert)
        .select_related("item")
        .order_by("-created_at", "-id")[:limit]
    )


def candidate_order_for(*, item_id: int, expert_id: int, candidate_ids: list[int]) -> list[int]:
    """A per-expert, stable shuffle of an item's candidates: each expert sees compare items in
    their own random order (so position cannot bias the pick), the same on every reload."""
    if len(candidate_ids) < 2:
        return list(candidate_ids)

    def key(cid: int) -> bytes:
        return hashlib.sha256(f"{item_id}:{expert_id}:{cid}".encode()).digest()

    return sorted(candidate_ids, key=key)


# ---- Agreement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementFigure:
    """One agreement figure. ``value`` is None when there is too little data (``note`` says
    why); ``items`` is how many items it rests on (items with two or more answers)."""

    key: str
    label: str
    method: str  # "raw" (share of agreeing pairs) or "alpha-nominal" / "alpha-ordinal"
    value: float | None
    items: int
    note: str = ""


@dataclass
class AgreementReport:
    project_id: int
    items_with_overlap: int
    figures: list[AgreementFigure] = field(default_factory=list)


def _pairwise(units: dict[int, list]) -> tuple[float | None, int]:
    """Share of agreeing pairs of answers within each item, over items with ≥2 answers."""
    agree = total = items = 0
    for values in units.values():
        if len(values) < 2:
            continue
        items += 1
        for a, b in combinations(values, 2):
            total += 1
            agree += a == b
    return (agree / total if total else None), items


def _alpha(
    units: dict[int, list], level: str, domain: list | None = None
) -> tuple[float | None, int, str]:
    """Krippendorff's alpha from the ``krippendorff`` package, fed value counts per item
    (items × values), so memory follows the number of items, not experts × items."""
    import krippendorff
    import numpy as np

    pairable = [values for values in units.values() if len(values) >= 2]
    if not pairable:
        return None, 0, "no item has two answers yet"
    domain = domain or sorted({v for values in pairable for v in values})
    if len(domain) < 2:
        return None, len(pairable), "every answer is the same value"
    index = {v: i for i, v in enumerate(domain)}
    counts = np.zeros((len(pairable), len(domain)), dtype=float)
    for row, values in enumerate(pairable):
        for v in values:
            counts[row, index[v]] += 1
    used = counts.sum(axis=0) > 0
    if used.sum() < 2:
        return None, len(pairable), "every answer is the same value"
    try:
        value = krippendorff.alpha(
            value_counts=counts, value_domain=list(range(len(domain))), level_of_measurement=level
        )
    except (ValueError, ZeroDivisionError) as exc:
        return None, len(pairable), str(exc)
    if value != value:  # NaN
        return None, len(pairable), "undefined for these answers"
    return float(value), len(pairable), ""


def agreement_report(*, project: Project) -> AgreementReport:
    """Agreement between experts in ``project``, over counted reviews.

    - verdicts (accept / correct / reject) and preferences: raw agreement, the share of pairs
      of experts on the same item who gave the same answer, and Krippendorff's alpha
      (nominal);
    - the overall rating and each label question: Krippendorff's alpha, ordinal for ratings,
      nominal for choices (a multiple-choice answer counts as one value: the set chosen);
      free-text questions are not measured.
    """
    schema = project.label_schema or []
    verdicts: dict[int, list] = defaultdict(list)
    prefs: dict[int, list] = defaultdict(list)
    ratings: dict[int, list] = defaultdict(list)
    labels: dict[str, dict[int, list]] = {q["key"]: defaultdict(list) for q in schema}
    rows = (
        Review.objects.filter(project=project)
        .exclude(verdict=Verdict.SKIP)
        .values_list("item_id", "verdict", "preferred_candidate_id", "tie", "rating", "labels")
    )
    for item_id, verdict, preferred, tie, rating, answers in rows.iterator(chunk_size=5000):
        verdicts[item_id].append(verdict)
        if tie or preferred:
            prefs[item_id].append("tie" if tie else preferred)
        if rating is not None:
            ratings[item_id].append(rating)
        for key, units in labels.items():
            value = (answers or {}).get(key)
            if value in (None, "", []):
                continue
            units[item_id].append("|".join(value) if isinstance(value, list) else value)

    report = AgreementReport(
        project_id=project.pk,
        items_with_overlap=sum(len(v) >= 2 for v in verdicts.values()),
    )
    raw, n = _pairwise(verdicts)
    report.figures.append(
        AgreementFigure(
            "verdict",
            "Verdict (accept / correct / reject)",
            "raw",
            raw,
            n,
            "" if n else "no item has two reviews yet",
        )
    )
    value, n, note = _alpha(verdicts, "nominal", [v for v in Verdict.values if v != Verdict.SKIP])
    report.figures.append(AgreementFigure("verdict", "Verdict", "alpha-nominal", value, n, note))
    raw, n = _pairwise(prefs)
    report.figures.append(
        AgreementFigure(
            "preference",
            "Preference (A / B / tie)",
            "raw",
            raw,
            n,
            "" if n else "no compared item has two preferences yet",
        )
    )
    if any(len(v) >= 2 for v in ratings.values()):
        value, n, note = _alpha(ratings, "ordinal", list(range(1, 6)))
        report.figures.append(
            AgreementFigure("rating", "Overall rating", "alpha-ordinal", value, n, note)
        )
    for question in schema:
        key, qtype = question["key"], question["type"]
        if qtype == "text":
            continue
        if qtype == "rating":
            value, n, note = _alpha(labels[key], "ordinal", list(range(1, question["scale"] + 1)))
            method = "alpha-ordinal"
        else:
            domain = question["options"] if qtype == "single_choice" else None
            value, n, note = _alpha(labels[key], "nominal", domain)
            method = "alpha-nominal"
        report.figures.append(AgreementFigure(key, question["prompt"], method, value, n, note))
    return report


# ---- Per expert and gold ------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertRow:
    expert_id: int
    username: str
    reviewed: int  # counted decisions
    skipped: int
    median_seconds: float | None
    agreement_with_final: float | None  # share of their decisions matching decided outcomes
    agreement_items: int
    gold_scored: int
    gold_correct: int
    correction_rate: float | None

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_scored if self.gold_scored else None


def _outcome_class(outcome: ItemOutcome) -> str | None:
    if outcome.outcome == Outcome.REJECTED:
        return "reject"
    if outcome.outcome != Outcome.ACCEPTED:
        return None
    if outcome.tie:
        return "pref:tie"
    if outcome.preferred_candidate_id:
        return f"pref:{outcome.preferred_candidate_id}"
    return f"accept:{outcome.final_candidate_id}" if outcome.final_candidate_id else None


def expert_table(*, project: Project) -> list[ExpertRow]:
    """One row per expert with decisions in the project: volume, pace, agreement with the
    final decision (on items that have one), gold accuracy and how often they correct."""
    outcomes = {
        o.item_id: _outcome_class(o)
        for o in ItemOutcome.objects.filter(project=project).exclude(
            outcome=Outcome.NEEDS_ADJUDICATION
        )
    }
    golds = {g.item_id: g for g in GoldAnswer.objects.filter(project=project)}
    stats: dict[int, dict] = defaultdict(
        lambda: {
            "reviewed": 0,
            "skipped": 0,
            "times": [],
            "agree": 0,
            "agree_n": 0,
            "gold_n": 0,
            "gold_ok": 0,
            "corrections": 0,
        }
    )
    names: dict[int, str] = {}
    reviews = (
        Review.objects.filter(project=project)
        .select_related("expert")
        .only(
            "item_id",
            "verdict",
            "candidate_id",
            "preferred_candidate_id",
            "tie",
            "labels",
            "time_spent_ms",
            "expert__username",
        )
    )
    for review in reviews.iterator(chunk_size=5000):
        s = stats[review.expert_id]
        names[review.expert_id] = review.expert.username
        if review.verdict == Verdict.SKIP:
            s["skipped"] += 1
            continue
        s["reviewed"] += 1
        s["corrections"] += review.verdict == Verdict.CORRECT
        if review.time_spent_ms is not None:
            s["times"].append(review.time_spent_ms / 1000)
        final = outcomes.get(review.item_id)
        if final is not None:
            s["agree_n"] += 1
            s["agree"] += review_class(review) == final
        gold = golds.get(review.item_id)
        if gold is not None:
            s["gold_n"] += 1
            s["gold_ok"] += gold_matches(gold=gold, review=review)
    rows = [
        ExpertRow(
            expert_id=eid,
            username=names[eid],
            reviewed=s["reviewed"],
            skipped=s["skipped"],
            median_seconds=statistics.median(s["times"]) if s["times"] else None,
            agreement_with_final=s["agree"] / s["agree_n"] if s["agree_n"] else None,
            agreement_items=s["agree_n"],
            gold_scored=s["gold_n"],
            gold_correct=s["gold_ok"],
            correction_rate=s["corrections"] / s["reviewed"] if s["reviewed"] else None,
        )
        for eid, s in stats.items()
    ]
    return sorted(rows, key=lambda r: (-r.reviewed, r.username))


# ---- Adjudication -------------------------------------------------------------------------


def adjudication_list(*, project: Project) -> QuerySet[ItemOutcome]:
    """Items waiting for a manager's decision, oldest first."""
    return (
        ItemOutcome.objects.filter(project=project, outcome=Outcome.NEEDS_ADJUDICATION)
        .select_related("item")
        .order_by("decided_at", "item_id")
    )


def item_decisions(*, item: Item) -> QuerySet[Review]:
    """Every decision on the item, side by side for a manager (names included)."""
    return (
        Review.objects.filter(item=item)
        .select_related("expert", "guideline_version")
        .order_by("created_at", "id")
    )


def audit_for_item(*, item: Item) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(item=item).select_related("actor").order_by("created_at", "id")


# ---- Dashboard ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    total: int
    complete: int
    reviews: int
    accepted: int
    rejected: int
    needs_adjudication: int

    @property
    def percent_complete(self) -> int:
        return round(100 * self.complete / self.total) if self.total else 0


def project_progress(*, project: Project) -> Progress:
    items = Item.objects.filter(project=project).aggregate(
        total=Count("id"), complete=Count("id", filter=Q(status="complete"))
    )
    outcomes = dict(
        ItemOutcome.objects.filter(project=project)
        .values_list("outcome")
        .annotate(n=Count("item_id"))
        .values_list("outcome", "n")
    )
    return Progress(
        total=items["total"],
        complete=items["complete"],
        reviews=Review.objects.filter(project=project).exclude(verdict=Verdict.SKIP).count(),
        accepted=outcomes.get(Outcome.ACCEPTED, 0),
        rejected=outcomes.get(Outcome.REJECTED, 0),
        needs_adjudication=outcomes.get(Outcome.NEEDS_ADJUDICATION, 0),
    )


@dataclass(frozen=True)
class RatePoint:
    day: dt.date
    model: str
    total: int
    accept: int
    correct: int
    reject: int

    def rate(self, verdict: str) -> float:
        return getattr(self, verdict) / self.total if self.total else 0.0


def decision_rates(*, project: Project, days: int = 90) -> list[RatePoint]:
    """Counted decisions per day and per model of the reviewed output (the candidate the
    verdict is about), with accept / correct / reject counts: the drift chart's data."""
    since = timezone.localdate() - dt.timedelta(days=days)
    rows = (
        Review.objects.filter(project=project, created_at__date__gte=since)
        .exclude(verdict=Verdict.SKIP)
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "candidate__model", "verdict")
        .annotate(n=Count("id"))
    )
    grouped: dict[tuple, Counter] = defaultdict(Counter)
    for row in rows:
        grouped[(row["day"], row["candidate__model"] or "(unknown model)")][row["verdict"]] += row[
            "n"
        ]
    return [
        RatePoint(
            day=day,
            model=model,
            total=sum(c.values()),
            accept=c["accept"],
            correct=c["correct"],
            reject=c["reject"],
        )
        for (day, model), c in sorted(grouped.items())
    ]
