"""Evaluation rounds: "evaluate adapter X against Y" as blind pairwise items judged by the
project's experts, and the verdict those judgments give.

1. ``evaluation_round_create`` freezes the pass rule, creates the round (GENERATING) and one
   generation job (purpose ``evaluation``) with two targets: the subject adapter on its base
   model, and the baseline (the subject's base model alone, or the promoted model). The
   prompts are the held-out ones: by default the eval split of the dataset version the
   subject was trained on, so no training prompt is judged.
2. When the job succeeds, its executor calls ``evaluation_round_generated``: one pairwise
   item per prompt in the project's queue (source ``evaluation``), the two answers in an
   order drawn per item (recorded in ``EvaluationItem.subject_position``), ``Candidate.model``
   left empty so that no page or API shows an expert which model wrote which answer. The
   round then waits for judgments (JUDGING).
3. Experts judge them like any compare item. ``evaluation_round_tally`` reads the items'
   final outcomes: the subject's wins, ties and losses, the win rate with ties counted half
   and its Wilson 95% interval. ``evaluation_rounds_check`` (beat) closes a round once all
   its items are decided; a manager may close it earlier (``evaluation_round_close``). The
   frozen pass rule then decides ``passed``.

The reads for the results page (per-expert breakdown, agreement, examples, automatic
figures) are at the end of this module (``evaluation_round_report``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from curation.models import Candidate, Item
from feedback.models import ItemOutcome, Outcome, Review, Verdict
from training.models import (
    Adapter,
    DatasetStatus,
    DatasetVersion,
    EvaluationItem,
    EvaluationRound,
    GenerationJob,
    GenerationOutput,
    GenerationPurpose,
    GenerationSource,
    JobStatus,
    RoundStatus,
)

logger = logging.getLogger(__name__)

ITEM_SOURCE = "evaluation"
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile
MIN_JUDGED_MAX = 100_000
DEFAULT_PASS_RULE: dict[str, Any] = {
    "rule": "wilson_lower_above",  # the interval's lower bound must be above threshold
    "threshold": 0.5,
    "min_judged": 10,  # fewer judged items than this: the round fails
    "confidence": 0.95,
    "ties": "half",
}
BASELINE_CHOICES = ("base", "promoted")
EXAMPLES_PER_KIND = 5
CHAT_MATCH_MAX = 500  # chat prompts whose corrections the edit-distance figure looks up


# ---- Statistics -------------------------------------------------------------------------------


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion ``successes / n``.

    E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", Journal of the American Statistical Association 22(158): 209-212; without
    continuity correction, method 3 of R. G. Newcombe (1998), "Two-sided confidence intervals
    for the single proportion: comparison of seven methods", Statistics in Medicine 17:
    857-872 (whose Table I gives 81/263 → 0.2553-0.3662, 15/148 → 0.0624-0.1605,
    0/20 → 0-0.1611, 1/29 → 0.0061-0.1718; the tests check these)::

        p = successes / n
        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/4n²)

    ``successes`` may be fractional (a tie counts half). Unlike the normal approximation it
    stays inside [0, 1] and is sensible for small n and proportions near 0 or 1. Raises
    ValueError for ``n < 1`` or successes outside [0, n].
    """
    if n < 1:
        raise ValueError("The Wilson interval needs at least one trial.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within [0, {n}], got {successes}.")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_rule_clean(raw: dict[str, Any] | None) -> dict[str, Any]:
    """The pass rule a round freezes: ``DEFAULT_PASS_RULE`` with ``threshold`` (0 ≤ t < 1)
    and ``min_judged`` (1..100000) as given. Raises ValidationError keyed
    ``pass_rule.<key>``."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - {"threshold", "min_judged"})
    if unknown:
        raise ValidationError(
            {
                "pass_rule": [
                    f"Unknown pass rule setting(s): {', '.join(unknown)}; "
                    "set threshold and min_judged."
                ]
            }  # fmt: skip
        )
    rule = dict(DEFAULT_PASS_RULE)
    errors: dict[str, list[str]] = {}
    if raw.get("threshold") not in (None, ""):
        try:
            threshold = float(raw["threshold"])
            if isinstance(raw["threshold"], bool) or not 0 <= threshold < 1:
                raise ValueError
            rule["threshold"] = threshold
        except (TypeError, ValueError):
            errors["pass_rule.threshold"] = [
                "The threshold is a win rate from 0 up to (not including) 1, e.g. 0.5."
            ]
    if raw.get("min_judged") not in (None, ""):
        try:
            value = raw["min_judged"]
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            min_judged = int(value)
            if not 1 <= min_judged <= MIN_JUDGED_MAX:
                raise ValueError
            rule["min_judged"] = min_judged
        except (TypeError, ValueError):
            errors["pass_rule.min_judged"] = [
                f"The minimum of judged items is a whole number from 1 to {MIN_JUDGED_MAX:,}."
            ]
    if errors:
        raise ValidationError(errors)
    return rule


def pass_rule_text(rule: dict[str, Any]) -> str:
    return (
        f"passes when the lower bound of the {rule.get('confidence', 0.95):.0%} Wilson interval "
        f"of the win rate (ties count half) is above {rule.get('threshold', 0.5):.0%}, with at "
        f"least {rule.get('min_judged', 1)} judged item(s)"
    )


@dataclass
class Tally:
    """Where a round's judgments stand. ``judged`` = wins + ties + losses (the win rate's
    n); ``neither``: items whose outcome rejected both answers (not in the win rate);
    ``pending``: items without a final outcome yet (not judged, or waiting for
    adjudication)."""

    wins: int = 0
    ties: int = 0
    losses: int = 0
    neither: int = 0
    pending: int = 0
    total: int = 0
    classes: dict[int, str] = field(default_factory=dict)  # item id -> win|tie|loss|neither

    @property
    def judged(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.pending == 0

    @property
    def win_rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.wins + self.ties / 2, self.judged) if self.judged else None


def pass_rule_decide(rule: dict[str, Any], tally: Tally) -> tuple[bool, str]:
    """``(passed, why)`` under a frozen rule."""
    if tally.judged < rule.get("min_judged", 1):
        return False, (
            f"{tally.judged} judged item(s), fewer than the {rule.get('min_judged', 1)} the "
            "pass rule needs."
        )
    low, _ = tally.interval
    threshold = rule.get("threshold", 0.5)
    if low > threshold:
        return True, f"Lower bound {low:.1%} is above {threshold:.0%}."
    return False, f"Lower bound {low:.1%} is not above {threshold:.0%}."


# ---- Creating a round -------------------------------------------------------------------------


def _has_eval_split(version: DatasetVersion) -> bool:
    return any((counts or {}).get("eval", 0) for counts in (version.row_counts or {}).values())


def evaluation_baseline(*, subject: Adapter, baseline) -> tuple[Any, Adapter | None]:
    """``(base model, adapter or None)`` that ``baseline`` names for ``subject``: ``"base"``
    (the subject's base model alone), ``"promoted"`` (the project's current model) or an
    Adapter of the same project. Raises ValidationError keyed ``baseline``."""
    from training.services.promotion import promotion_current

    project = subject.run.dataset_version.project
    if isinstance(baseline, Adapter):
        if baseline.run.dataset_version.project_id != project.pk:
            raise ValidationError({"baseline": ["That adapter belongs to another project."]})
        if baseline.pk == subject.pk:
            raise ValidationError({"baseline": ["An adapter cannot be evaluated against itself."]})
        return baseline.run.base_model, baseline
    if baseline == "base":
        return subject.run.base_model, None
    if baseline == "promoted":
        current = promotion_current(project=project)
        if current is None:
            raise ValidationError(
                {
                    "baseline": [
                        "Nothing is promoted in this project yet: compare with the base "
                        "model instead."
                    ]
                }  # fmt: skip
            )
        if current.adapter_id == subject.pk:
            raise ValidationError(
                {"baseline": [f"Adapter {subject.pk} is the promoted model already."]}
            )
        return current.base_model, current.adapter
    raise ValidationError(
        {"baseline": ['The baseline is "base", "promoted" or an adapter of the project.']}
    )


def evaluation_round_create(
    *,
    subject: Adapter,
    baseline: Any = "base",
    dataset_version: DatasetVersion | None = None,
    limit: int | None = None,
    pass_rule: dict[str, Any] | None = None,
    decoding: dict[str, Any] | None = None,
    created_by=None,
    trigger: str = "manual",
) -> EvaluationRound:
    """Start a round: the round (GENERATING) and its generation job, in one transaction; the
    job is queued when it commits.

    Preconditions: the caller checked that ``created_by`` may start rounds in the subject's
    project (admins). ``dataset_version`` (default: the one the subject was trained on) must
    be built, of the same project, with an eval split. Raises ValidationError keyed by field
    (``dataset_version``, ``baseline``, ``limit``, ``pass_rule.<key>``, and the generation
    job's own, e.g. ``decoding.<key>``).
    """
    from training.services.generation import generation_job_create

    project = subject.run.dataset_version.project
    rule = pass_rule_clean(pass_rule)
    version = dataset_version or subject.run.dataset_version
    if version.project_id != project.pk:
        raise ValidationError({"dataset_version": ["That dataset version is of another project."]})
    if version.status != DatasetStatus.SUCCEEDED:
        raise ValidationError(
            {"dataset_version": [f"Dataset version {version.pk} is not built ({version.status})."]}
        )
    if not _has_eval_split(version):
        raise ValidationError(
            {
                "dataset_version": [
                    f"Dataset version {version.pk} has no eval split (it was built with eval "
                    "fraction 0), so it holds no held-out prompts to evaluate on: build a "
                    "version with an eval fraction above 0, or choose another version."
                ]
            }
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationError({"limit": ["The limit is a whole number of prompts, 1 or more."]})
    base_model, baseline_adapter = evaluation_baseline(subject=subject, baseline=baseline)
    with transaction.atomic():
        job = generation_job_create(
            project=project,
            targets=[(subject.run.base_model, subject), (base_model, baseline_adapter)],
            source=GenerationSource.EVAL_SPLIT,
            purpose=GenerationPurpose.EVALUATION,
            dataset_version=version,
            limit=limit,
            decoding=decoding,
            created_by=created_by,
        )
        round_ = EvaluationRound.objects.create(
            project=project,
            subject=subject,
            baseline_adapter=baseline_adapter,
            baseline_base_model=base_model,
            dataset_version=version,
            generation_job=job,
            pass_rule=rule,
            trigger=trigger,
            created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
        )
    return round_


# ---- From generated answers to blind items ---------------------------------------------------


def _position_rng(round_id: int) -> random.Random:
    """The round's RNG for answer order. Seeded with a keyed hash of the round id, so the
    order is reproducible on the server but not predictable from what experts can see (the
    item's external id holds the round and prompt number)."""
    key = settings.SECRET_KEY.encode()
    digest = hmac.new(key, f"evaluation-round:{round_id}".encode(), hashlib.sha256).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 (not for secrets)


def external_id_for(round_id: int, index: int) -> str:
    return f"evaluation-{round_id}-{index:05d}"


def _subject_target(job: GenerationJob, round_: EvaluationRound) -> tuple[int, int]:
    """The (subject, baseline) target ids of the round's job."""
    targets = list(job.targets.order_by("position"))
    subject = [t for t in targets if t.adapter_id == round_.subject_id]
    others = [t for t in targets if t.adapter_id != round_.subject_id]
    if len(targets) != 2 or len(subject) != 1 or len(others) != 1:
        raise ValueError(f"Generation job {job.pk} does not have the round's two targets.")
    return subject[0].pk, others[0].pk


def evaluation_round_generated(*, job: GenerationJob) -> EvaluationRound | None:
    """Turn a succeeded evaluation job's answers into the round's blind pairwise items, and
    move the round to JUDGING. Idempotent: a second call (a redelivered task, the beat check
    after a lost callback) finds the round past GENERATING and returns it unchanged.

    One item per prompt answered by both targets: ``external_id``
    ``evaluation-<round>-<index>``, the prompt (text or chat), the two answers as candidates
    in an order drawn per item (``subject_position``), no model names. Opens its own
    transaction and locks the round row. Returns the round (None when the job has none).
    """
    with transaction.atomic():
        round_ = (
            EvaluationRound.objects.select_for_update(of=("self",))
            .select_related("project")
            .filter(generation_job_id=job.pk)
            .first()
        )
        if round_ is None:
            return None
        if round_.status != RoundStatus.GENERATING:
            return round_
        job = GenerationJob.objects.get(pk=job.pk)
        if job.status != JobStatus.SUCCEEDED:
            return round_
        subject_target, baseline_target = _subject_target(job, round_)
        by_index: dict[int, dict[int, GenerationOutput]] = defaultdict(dict)
        for output in GenerationOutput.objects.filter(job=job).order_by("index", "target_id"):
            by_index[output.index][output.target_id] = output
        pairs = [
            (index, answers[subject_target], answers[baseline_target])
            for index, answers in sorted(by_index.items())
            if subject_target in answers and baseline_target in answers
        ]
        if not pairs:
            round_.status = RoundStatus.FAILED
            round_.error = "The generation job produced no pair of answers to judge."
            round_.decided_at = timezone.now()
            round_.save(update_fields=["status", "error", "decided_at"])
            return round_
        rng = _position_rng(round_.pk)
        positions = [rng.randrange(2) for _ in pairs]
        items = Item.objects.bulk_create(
            Item(
                project=round_.project,
                external_id=external_id_for(round_.pk, index),
                prompt="" if subject.messages else subject.prompt,
                messages=subject.messages or None,
                metadata={},
                source=ITEM_SOURCE,
            )
            for index, subject, _ in pairs
        )
        candidates = []
        for item, (_, subject, baseline), position in zip(items, pairs, positions, strict=True):
            answers = (
                [subject.output, baseline.output]
                if position == 0
                else [
                    baseline.output,
                    subject.output,
                ]
            )
            candidates += [
                Candidate(item=item, position=p, output=text, model="")
                for p, text in enumerate(answers)
            ]
        Candidate.objects.bulk_create(candidates)
        EvaluationItem.objects.bulk_create(
            EvaluationItem(round=round_, item=item, subject_position=position, index=index)
            for item, (index, _, _), position in zip(items, pairs, positions, strict=True)
        )
        # Where each answer landed, for the job's own pages.
        by_item_position = {
            (c.item_id, c.position): c for c in Candidate.objects.filter(item__in=items)
        }
        updates = []
        for item, (_, subject, baseline), position in zip(items, pairs, positions, strict=True):
            for output, pos in ((subject, position), (baseline, 1 - position)):
                output.item = item
                output.candidate = by_item_position[(item.pk, pos)]
                updates.append(output)
        GenerationOutput.objects.bulk_update(updates, ["item", "candidate"])
        round_.status = RoundStatus.JUDGING
        round_.save(update_fields=["status"])
    logger.info("evaluation round %s: %s blind items", round_.pk, len(pairs))
    return round_


# ---- Tally, close, check ----------------------------------------------------------------------


def _position_of(candidate_id: int | None, positions: dict[int, int]) -> int | None:
    return positions.get(candidate_id) if candidate_id is not None else None


def evaluation_round_tally(*, round_: EvaluationRound) -> Tally:
    """Wins, ties and losses of the subject from the items' final outcomes (a read).

    An accepted outcome that prefers one answer (or accepts or corrects one answer without a
    stated preference) is a win when that answer is the subject's, a loss otherwise; a tie
    is a tie; a rejected outcome (neither answer usable) is counted as ``neither``, outside
    the win rate; no outcome yet, or one waiting for adjudication, is pending.
    """
    rows = list(
        EvaluationItem.objects.filter(round=round_).values_list("item_id", "subject_position")
    )
    item_ids = [item_id for item_id, _ in rows]
    positions = dict(Candidate.objects.filter(item_id__in=item_ids).values_list("pk", "position"))
    outcomes = {
        o["item_id"]: o
        for o in ItemOutcome.objects.filter(item_id__in=item_ids).values(
            "item_id", "outcome", "tie", "preferred_candidate_id", "final_candidate_id"
        )
    }
    tally = Tally(total=len(rows))
    for item_id, subject_position in rows:
        outcome = outcomes.get(item_id)
        if outcome is None or outcome["outcome"] == Outcome.NEEDS_ADJUDICATION:
            tally.pending += 1
            continue
        if outcome["outcome"] == Outcome.REJECTED:
            tally.neither += 1
            tally.classes[item_id] = "neither"
            continue
        if outcome["tie"]:
            tally.ties += 1
            tally.classes[item_id] = "tie"
            continue
        chosen = _position_of(
            outcome["preferred_candidate_id"] or outcome["final_candidate_id"], positions
        )
        if chosen is None:  # accepted without naming an answer: nothing to count
            tally.neither += 1
            tally.classes[item_id] = "neither"
        elif chosen == subject_position:
            tally.wins += 1
            tally.classes[item_id] = "win"
        else:
            tally.losses += 1
            tally.classes[item_id] = "loss"
    return tally


def _tally_fields(tally: Tally) -> dict[str, Any]:
    interval = tally.interval
    return {
        "wins": tally.wins,
        "ties": tally.ties,
        "losses": tally.losses,
        "win_rate": tally.win_rate,
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
    }


def evaluation_round_close(*, round_: EvaluationRound, closed_by=None, now=None) -> EvaluationRound:
    """Close a JUDGING round now: tally what is decided, apply the frozen pass rule, mark it
    COMPLETE with ``passed`` set (compare-and-set: a round closed twice keeps its first
    verdict). Items still open stay in the queue; their judgments no longer change the
    verdict. Raises ValidationError when the round is not judging."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = EvaluationRound.objects.select_for_update().filter(pk=round_.pk).first()
        if locked is None or locked.status != RoundStatus.JUDGING:
            status = locked.get_status_display() if locked else "gone"
            raise ValidationError({"status": [f"This round is not being judged ({status})."]})
        tally = evaluation_round_tally(round_=locked)
        passed, why = pass_rule_decide(locked.pass_rule, tally)
        figures = dict(locked.figures or {})
        figures["verdict"] = why
        figures["closed"] = {
            "by": getattr(closed_by, "username", None) or "automatically (all items decided)",
            "judged": tally.judged,
            "neither": tally.neither,
            "pending": tally.pending,
        }
        figures.update(_automatic_figures(locked))
        for name, value in _tally_fields(tally).items():
            setattr(locked, name, value)
        locked.passed = passed
        locked.figures = figures
        locked.status = RoundStatus.COMPLETE
        locked.decided_at = now
        locked.save()
    return locked


def evaluation_rounds_check() -> dict[str, int]:
    """Beat: move every open round along. A GENERATING round whose job failed or was
    cancelled fails; one whose job succeeded but whose items were never made (a lost
    callback) gets them; a JUDGING round has its counts refreshed and is closed once every
    item is decided. Safe to run concurrently (each step is a compare-and-set under the
    round's lock). Returns counts of what it did."""
    done = Counter()
    generating = EvaluationRound.objects.filter(status=RoundStatus.GENERATING).select_related(
        "generation_job"
    )
    for round_ in generating:
        job = round_.generation_job
        if job is None or job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            reason = (
                f"The generation job {job.status}: {job.error}".strip(": ")
                if job is not None
                else "The generation job is gone."
            )
            done["failed"] += EvaluationRound.objects.filter(
                pk=round_.pk, status=RoundStatus.GENERATING
            ).update(status=RoundStatus.FAILED, error=reason[:2000], decided_at=timezone.now())
        elif job.status == JobStatus.SUCCEEDED:
            evaluation_round_generated(job=job)
            done["generated"] += 1
    for round_ in EvaluationRound.objects.filter(status=RoundStatus.JUDGING):
        tally = evaluation_round_tally(round_=round_)
        if tally.complete:
            try:
                evaluation_round_close(round_=round_)
                done["closed"] += 1
            except ValidationError:  # closed meanwhile by another check or a manager
                pass
        else:
            figures = {**(round_.figures or {}), **_automatic_figures(round_)}
            EvaluationRound.objects.filter(pk=round_.pk, status=RoundStatus.JUDGING).update(
                figures=figures, **_tally_fields(tally)
            )
            done["refreshed"] += 1
    return dict(done)


# ---- Reads for the results page ---------------------------------------------------------------


def _prompt_key(prompt: str, messages) -> str:
    return json.dumps(messages, sort_keys=True) if messages else prompt.strip()


def _review_class(review: dict, positions: dict[int, int], subject_position: int) -> str:
    if review["verdict"] == Verdict.REJECT:
        return "neither"
    if review["tie"]:
        return "tie"
    chosen = _position_of(review["preferred_candidate_id"] or review["candidate_id"], positions)
    if chosen is None:
        return "neither"
    return "win" if chosen == subject_position else "loss"


def _automatic_figures(round_: EvaluationRound) -> dict[str, Any]:
    """Figures that need no judgment: the subject run's final eval loss (and the baseline
    adapter's), and, for each model, the mean normalised edit distance between its answer and
    the experts' corrections of the same prompt in this project (on prompts that have one).
    """
    from feedback.monitoring import normalised_edit_distance

    subject_run = round_.subject.run
    figures: dict[str, Any] = {
        "subject_eval_loss": subject_run.eval_loss,
        "baseline_eval_loss": round_.baseline_adapter.run.eval_loss
        if round_.baseline_adapter_id
        else None,
    }
    rows = list(
        EvaluationItem.objects.filter(round=round_)
        .select_related("item")
        .values_list("item_id", "item__prompt", "item__messages", "subject_position")
    )
    if not rows:
        figures["edit_distance"] = {"prompts": 0, "subject": None, "baseline": None}
        return figures
    answers: dict[int, dict[int, str]] = defaultdict(dict)
    for item_id, position, output in Candidate.objects.filter(
        item_id__in=[r[0] for r in rows]
    ).values_list("item_id", "position", "output"):
        answers[item_id][position] = output
    keys = {item_id: _prompt_key(prompt, messages) for item_id, prompt, messages, _ in rows}
    text_prompts = {prompt for _, prompt, messages, _ in rows if not messages and prompt}
    # Corrections: accepted outcomes whose final text is not the chosen answer as it was.
    corrections: dict[str, list[str]] = defaultdict(list)
    outcomes = ItemOutcome.objects.filter(
        project_id=round_.project_id, outcome=Outcome.ACCEPTED
    ).exclude(final_text="")
    chat_items = [(item_id, messages) for item_id, _, messages, _ in rows if messages]
    selected = list(
        outcomes.filter(item__messages__isnull=True, item__prompt__in=text_prompts).values_list(
            "item__prompt", "item__messages", "final_text", "final_candidate__output"
        )
    )
    for _, messages in chat_items[:CHAT_MATCH_MAX]:  # chats: matched one by one
        selected += list(
            outcomes.filter(item__messages=messages).values_list(
                "item__prompt", "item__messages", "final_text", "final_candidate__output"
            )
        )
    for prompt, messages, final_text, original in selected:
        if final_text != original:
            corrections[_prompt_key(prompt, messages)].append(final_text)
    subject_d, baseline_d = [], []
    for item_id, _, _, subject_position in rows:
        refs = corrections.get(keys[item_id])
        if not refs or len(answers[item_id]) != 2:
            continue
        for position, bucket in ((subject_position, subject_d), (1 - subject_position, baseline_d)):
            bucket.append(
                sum(normalised_edit_distance(answers[item_id][position], r) for r in refs)
                / len(refs)
            )
    figures["edit_distance"] = {
        "prompts": len(subject_d),
        "subject": sum(subject_d) / len(subject_d) if subject_d else None,
        "baseline": sum(baseline_d) / len(baseline_d) if baseline_d else None,
    }
    return figures


@dataclass
class ExpertBreakdown:
    username: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    neither: int = 0

    @property
    def judged(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.judged if self.judged else None


@dataclass
class RoundReport:
    round: EvaluationRound
    tally: Tally
    experts: list[ExpertBreakdown]
    agreement: float | None
    agreement_items: int
    alpha: float | None
    alpha_note: str
    examples: dict[str, list[dict[str, Any]]]
    figures: dict[str, Any]
    rule_text: str


def evaluation_round_report(*, round_: EvaluationRound) -> RoundReport:
    """Everything the results page shows (managers only: it names which answer was whose).
    Live counts while judging; the frozen ones once complete. Agreement: the share of
    agreeing pairs of experts on the same item, over win / tie / loss / neither, and
    Krippendorff's alpha (nominal) on the same answers (feedback.selectors' helpers)."""
    from feedback.selectors import _alpha, _pairwise

    tally = evaluation_round_tally(round_=round_)
    rows = list(
        EvaluationItem.objects.filter(round=round_).values_list(
            "item_id", "subject_position", "index"
        )
    )
    subject_pos = {item_id: pos for item_id, pos, _ in rows}
    positions = dict(
        Candidate.objects.filter(item_id__in=subject_pos).values_list("pk", "position")
    )
    experts: dict[int, ExpertBreakdown] = {}
    units: dict[int, list[str]] = defaultdict(list)
    reviews = (
        Review.objects.filter(item_id__in=subject_pos)
        .exclude(verdict=Verdict.SKIP)
        .values(
            "item_id",
            "expert_id",
            "expert__username",
            "verdict",
            "tie",
            "preferred_candidate_id",
            "candidate_id",
        )  # fmt: skip
        .order_by("expert__username", "item_id")
    )
    for review in reviews:
        cls = _review_class(review, positions, subject_pos[review["item_id"]])
        row = experts.setdefault(review["expert_id"], ExpertBreakdown(review["expert__username"]))
        counter = {"win": "wins", "tie": "ties", "loss": "losses"}.get(cls, "neither")
        setattr(row, counter, getattr(row, counter) + 1)
        units[review["item_id"]].append(cls)
    agreement, agreement_items = _pairwise(units)
    alpha, _, alpha_note = _alpha(units, "nominal", ["win", "tie", "loss", "neither"])
    examples: dict[str, list[dict[str, Any]]] = {"win": [], "loss": [], "tie": []}
    wanted = [item_id for item_id, _, _ in rows if tally.classes.get(item_id) in examples]
    picked: list[int] = []
    for kind in examples:
        picked += [i for i in wanted if tally.classes[i] == kind][:EXAMPLES_PER_KIND]
    items = {i.pk: i for i in Item.objects.filter(pk__in=picked).prefetch_related("candidates")}
    finals = dict(
        ItemOutcome.objects.filter(item_id__in=picked).values_list("item_id", "final_text")
    )
    for item_id in picked:
        item = items[item_id]
        outputs = {c.position: c.output for c in item.candidates.all()}
        position = subject_pos[item_id]
        examples[tally.classes[item_id]].append(
            {
                "item": item,
                "prompt": item.display_prompt,
                "subject": outputs.get(position, ""),
                "baseline": outputs.get(1 - position, ""),
                "final_text": finals.get(item_id, ""),
            }
        )
    # The automatic figures are refreshed by the beat check and frozen at close (the results
    # page polls every few seconds); computed here only before the first check.
    figures = dict(round_.figures or {})
    if "edit_distance" not in figures and round_.status == RoundStatus.JUDGING:
        figures.update(_automatic_figures(round_))
    return RoundReport(
        round=round_,
        tally=tally,
        experts=sorted(experts.values(), key=lambda e: e.username),
        agreement=agreement,
        agreement_items=agreement_items,
        alpha=alpha,
        alpha_note=alpha_note,
        examples=examples,
        figures=figures,
        rule_text=pass_rule_text(round_.pass_rule or DEFAULT_PASS_RULE),
    )
