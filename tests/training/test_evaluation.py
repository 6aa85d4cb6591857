"""Evaluation rounds: the Wilson interval, the pass rule, blind pairwise items (no model name
reaches an expert, in HTML or the API), tallies from real judgments, closing, the beat check
and creating a round through the real generation job service."""

from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError

from curation.models import Candidate, Item
from curation.services.queue import queue_claim_next
from feedback.services import review_submit
from tests.factories import UserFactory, membership_add
from tests.training.loop_helpers import BASE_NAME, fake_adapter, round_with_answers
from training.models import (
    EvaluationItem,
    EvaluationRound,
    GenerationOutput,
    JobStatus,
    RoundStatus,
)
from training.services.evaluation import (
    Tally,
    evaluation_round_close,
    evaluation_round_generated,
    evaluation_round_report,
    evaluation_round_tally,
    evaluation_rounds_check,
    pass_rule_clean,
    pass_rule_decide,
    wilson_interval,
)

pytestmark = pytest.mark.django_db


# ---- Wilson interval and the pass rule --------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_the_wilson_interval_matches_published_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_the_wilson_interval_is_symmetric_and_takes_half_successes():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(1 - high) and low < 0.5 < high
    # 7 wins and 2 ties of 10: 8 successes; the same interval as 8/10
    assert wilson_interval(7 + 2 / 2, 10) == wilson_interval(8, 10)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[0] == 0
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_the_default_pass_rule_needs_the_lower_bound_above_one_half():
    rule = pass_rule_clean(None)
    assert rule["threshold"] == 0.5 and rule["min_judged"] == 10 and rule["ties"] == "half"
    # 9 wins of 10: lower bound ~0.596 > 0.5
    assert pass_rule_decide(rule, Tally(wins=9, losses=1, total=10))[0] is True
    # 7 wins of 10 (70%) is not enough: lower bound ~0.397
    passed, why = pass_rule_decide(rule, Tally(wins=7, losses=3, total=10))
    assert passed is False and "not above 50%" in why
    # 9 wins and 2 ties of 11 (win rate 0.909): ties count half, lower bound ~0.62
    assert pass_rule_decide(rule, Tally(wins=9, ties=2, total=11))[0] is True
    # too few judged items fails whatever the rate
    passed, why = pass_rule_decide(rule, Tally(wins=5, total=5))
    assert passed is False and "fewer than the 10" in why


def test_pass_rule_settings_are_checked():
    assert pass_rule_clean({"threshold": "0.6", "min_judged": 3})["min_judged"] == 3
    with pytest.raises(ValidationError) as exc:
        pass_rule_clean({"threshold": 1.5, "min_judged": 0})
    assert set(exc.value.message_dict) == {"pass_rule.threshold", "pass_rule.min_judged"}
    with pytest.raises(ValidationError):
        pass_rule_clean({"ties": "full"})


# ---- Blind items ------------------------------------------------------------------------------

ANSWERS = [
    (f"How do I reset my password, case {n}?", f"Open Settings, case {n}.", f"No idea {n}.")
    for n in range(12)
]


@pytest.fixture
def subject(project):
    return fake_adapter(project)


@pytest.fixture
def judging(subject, compare_mode):
    round_ = round_with_answers(subject, ANSWERS, pass_rule={"min_judged": 4})
    evaluation_round_generated(job=round_.generation_job)
    round_.refresh_from_db()
    return round_


def test_generated_answers_become_one_blind_pairwise_item_per_prompt(judging, subject):
    assert judging.status == RoundStatus.JUDGING
    links = list(EvaluationItem.objects.filter(round=judging).select_related("item"))
    assert [e.index for e in links] == list(range(12))
    positions = [e.subject_position for e in links]
    assert set(positions) == {0, 1}, "the order is drawn per item"
    for link in links:
        item = link.item
        assert item.source == "evaluation" and item.metadata == {}
        assert item.external_id == f"evaluation-{judging.pk}-{link.index:05d}"
        prompt, subject_answer, baseline_answer = ANSWERS[link.index]
        assert item.prompt == prompt
        candidates = list(item.candidates.order_by("position"))
        assert [c.model for c in candidates] == ["", ""]
        assert candidates[link.subject_position].output == subject_answer
        assert candidates[1 - link.subject_position].output == baseline_answer
    # every answer knows where it landed
    outputs = GenerationOutput.objects.filter(job=judging.generation_job)
    assert outputs.count() == 24 and not outputs.filter(candidate__isnull=True).exists()


def test_making_the_items_twice_makes_them_once(judging):
    again = evaluation_round_generated(job=judging.generation_job)
    assert again.pk == judging.pk and again.status == RoundStatus.JUDGING
    assert EvaluationItem.objects.filter(round=judging).count() == 12
    assert Item.objects.filter(source="evaluation").count() == 12


def test_the_order_is_the_same_on_every_run_for_a_round(subject, compare_mode, settings):
    from training.services.evaluation import _position_rng

    first = [_position_rng(7).randrange(2) for _ in range(30)]
    assert first == [_position_rng(7).randrange(2) for _ in range(30)]
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert first != [_position_rng(7).randrange(2) for _ in range(30)]


def test_chat_prompts_stay_chats(subject, compare_mode):
    round_ = round_with_answers(subject, ANSWERS[:2], messages=True)
    evaluation_round_generated(job=round_.generation_job)
    item = EvaluationItem.objects.filter(round=round_).first().item
    assert item.prompt == "" and item.messages == [{"role": "user", "content": ANSWERS[0][0]}]


def test_a_job_without_answers_fails_its_round(subject):
    round_ = round_with_answers(subject, [])
    evaluation_round_generated(job=round_.generation_job)
    round_.refresh_from_db()
    assert round_.status == RoundStatus.FAILED and "no pair" in round_.error


def _leaks(text: str, round_: EvaluationRound) -> list[str]:
    names = [
        BASE_NAME,
        f"adapter-{round_.subject_id}",
        f"adapter {round_.subject_id}",
        "+adapter",
        *[t.tag for t in round_.generation_job.targets.all()],
    ]
    return [name for name in names if name.lower() in text.lower()]


def test_experts_see_no_model_name_in_the_queue_the_review_page_or_the_item_api(
    judging, personas, client_for, api_for
):
    expert = personas["expert"]
    api = api_for(expert)
    claim = api.post(f"/api/v1/projects/{judging.project.slug}/queue/claim/")
    assert claim.status_code in (200, 201), claim.content
    body = claim.content.decode()
    claimed = claim.json()["item"]
    assert claimed["external_id"].startswith(f"evaluation-{judging.pk}-")
    assert [c["model"] for c in claimed["candidates"]] == ["", ""]
    assert not _leaks(body, judging), body
    item_id = claimed["id"]
    detail = api.get(f"/api/v1/items/{item_id}/")
    assert detail.status_code == 200
    assert not _leaks(detail.content.decode(), judging)
    page = client_for(expert).get(f"/projects/{judging.project.slug}/review/")
    if page.status_code == 302:
        page = client_for(expert).get(page.url)
    html = page.content.decode()
    assert page.status_code == 200 and "Output A" in html and "Output B" in html
    assert not _leaks(html, judging)
    # ...while the manager's results page says which answer was whose
    results = client_for(personas["manager"]).get(
        f"/projects/{judging.project.slug}/evaluations/{judging.pk}/"
    )
    assert (
        results.status_code == 200 and f"Adapter {judging.subject_id}" in results.content.decode()
    )


# ---- Judgments, tallies, closing --------------------------------------------------------------


def judge(round_, expert, decide):
    """``expert`` judges every item of the round the queue hands them: ``decide(index)``
    returns "subject", "baseline", "tie" or "reject"."""
    links = {e.item_id: e for e in EvaluationItem.objects.filter(round=round_)}
    while True:
        claim = queue_claim_next(project=round_.project, expert=expert)
        if claim is None:
            return
        link = links[claim.item.pk]
        choice = decide(link.index)
        candidates = list(Candidate.objects.filter(item_id=claim.item.pk).order_by("position"))
        if choice == "tie":
            fields = {"verdict": "accept", "tie": True}
        elif choice == "reject":
            fields = {"verdict": "reject"}
        else:
            position = link.subject_position if choice == "subject" else 1 - link.subject_position
            fields = {"verdict": "accept", "preferred_candidate": candidates[position].pk}
        review_submit(item=claim.item, expert=expert, **fields)


def plan(index: int) -> str:
    # 8 wins, 2 ties, 1 loss, 1 reject over 12 prompts
    return {8: "tie", 9: "tie", 10: "baseline", 11: "reject"}.get(index, "subject")


def test_judgments_give_wins_ties_losses_and_the_wilson_interval(judging, personas, client_for):
    judge(judging, personas["expert"], plan)
    tally = evaluation_round_tally(round_=judging)
    assert (tally.wins, tally.ties, tally.losses, tally.neither, tally.pending) == (8, 2, 1, 1, 0)
    assert tally.win_rate == pytest.approx(9 / 11)
    low, high = tally.interval
    assert (low, high) == pytest.approx(wilson_interval(9, 11))
    assert math.isclose(low, 0.5230, abs_tol=1e-3)  # (9/11 ± …) computed by hand

    done = evaluation_rounds_check()
    assert done == {"closed": 1}
    judging.refresh_from_db()
    assert judging.status == RoundStatus.COMPLETE and judging.decided_at
    assert (judging.wins, judging.ties, judging.losses) == (8, 2, 1)
    assert judging.win_rate == pytest.approx(9 / 11) and judging.ci_low == pytest.approx(low)
    assert judging.passed is True and "above 50%" in judging.figures["verdict"]
    assert judging.figures["subject_eval_loss"] == 1.25

    page = client_for(personas["manager"]).get(
        f"/projects/{judging.project.slug}/evaluations/{judging.pk}/"
    )
    html = page.content.decode()
    assert "<dd data-wins>8</dd>" in html and "<dd data-ties>2</dd>" in html
    assert f"<dd data-interval>{low:.3f} – {judging.ci_high:.3f}</dd>" in html
    assert "Passed" in html and "hx-trigger" not in html  # closed: no more polling

    report = evaluation_round_report(round_=judging)
    (row,) = report.experts
    assert (row.username, row.wins, row.ties, row.losses, row.neither) == (
        personas["expert"].username, 8, 2, 1, 1,
    )  # fmt: skip


def test_agreement_and_per_expert_breakdown_with_two_experts(subject, project, personas):
    from curation.services.settings import project_settings_update

    project_settings_update(
        project=project, review_modes=["correct", "compare"], overlap=2, outcome_rule="majority"
    )
    round_ = round_with_answers(subject, ANSWERS[:4], pass_rule={"min_judged": 1})
    evaluation_round_generated(job=round_.generation_job)
    second = UserFactory(username="second-expert")
    membership_add(project, second, "expert")
    judge(round_, personas["expert"], lambda i: "subject")
    judge(round_, second, lambda i: "subject" if i < 2 else "baseline")
    report = evaluation_round_report(round_=round_)
    assert [(e.username, e.wins, e.losses) for e in report.experts] == [
        ("erin-expert", 4, 0),
        ("second-expert", 2, 2),
    ]
    assert report.agreement == pytest.approx(0.5) and report.agreement_items == 4
    # two items disagree 1-1 under majority: they wait for adjudication
    assert report.tally.pending == 2 and report.tally.wins == 2


def test_a_round_does_not_close_while_items_are_open_and_a_manager_can_close_it(
    judging, personas, client_for
):
    # five judged, seven open
    links = list(EvaluationItem.objects.filter(round=judging))
    for _ in range(5):
        claim = queue_claim_next(project=judging.project, expert=personas["expert"])
        link = next(e for e in links if e.item_id == claim.item.pk)
        preferred = Candidate.objects.get(item_id=claim.item.pk, position=link.subject_position)
        review_submit(
            item=claim.item, expert=personas["expert"], verdict="accept",
            preferred_candidate=preferred.pk,
        )  # fmt: skip
    assert evaluation_rounds_check() == {"refreshed": 1}
    judging.refresh_from_db()
    assert judging.status == RoundStatus.JUDGING and judging.wins == 5

    url = f"/projects/{judging.project.slug}/evaluations/{judging.pk}/close/"
    assert client_for(personas["expert"]).post(url).status_code == 403
    assert client_for(personas["outsider"]).post(url).status_code == 404
    response = client_for(personas["manager"]).post(url)
    assert response.status_code == 302
    judging.refresh_from_db()
    assert judging.status == RoundStatus.COMPLETE and judging.wins == 5
    # the frozen rule (min_judged 4): 5 of 5, lower bound 0.566 > 0.5
    assert judging.passed is True
    assert judging.figures["closed"]["by"] == personas["manager"].username
    with pytest.raises(ValidationError):
        evaluation_round_close(round_=judging)


def test_the_pass_rule_is_frozen_at_creation(judging, personas):
    judge(judging, personas["expert"], plan)
    judging.pass_rule = {**judging.pass_rule, "threshold": 0.5}
    EvaluationRound.objects.filter(pk=judging.pk).update(
        pass_rule={**judging.pass_rule, "min_judged": 50}
    )
    judging.refresh_from_db()
    closed = evaluation_round_close(round_=judging)
    assert closed.passed is False and "fewer than the 50" in closed.figures["verdict"]


def test_the_beat_check_fails_a_round_whose_generation_failed(subject):
    round_ = round_with_answers(subject, ANSWERS[:2])
    job = round_.generation_job
    job.status = JobStatus.FAILED
    job.error = "CUDA out of memory"
    job.save()
    assert evaluation_rounds_check() == {"failed": 1}
    round_.refresh_from_db()
    assert round_.status == RoundStatus.FAILED and "CUDA out of memory" in round_.error


def test_the_beat_check_makes_items_when_the_callback_was_lost(subject, compare_mode):
    round_ = round_with_answers(subject, ANSWERS[:3])
    assert evaluation_rounds_check() == {"generated": 1, "refreshed": 1}
    round_.refresh_from_db()
    assert round_.status == RoundStatus.JUDGING and round_.items.count() == 3


def test_edit_distance_figures_use_expert_corrections_of_the_same_prompt(
    subject, project, personas, compare_mode, decide_item
):
    prompt, subject_answer, baseline_answer = ANSWERS[0]
    # an earlier item with the same prompt was corrected to the subject's exact answer
    decide_item(
        project,
        [(personas["expert"], "correct", {"corrected_output": subject_answer})],
        prompt=prompt,
        candidates=[("Something else entirely.", "m")],
    )
    round_ = round_with_answers(subject, ANSWERS[:2], pass_rule={"min_judged": 1})
    round_ = evaluation_round_generated(job=round_.generation_job)
    report = evaluation_round_report(round_=round_)
    figures = report.figures["edit_distance"]
    assert figures["prompts"] == 1
    assert figures["subject"] == 0.0 and figures["baseline"] > 0.3
    # the beat check stores them on the round (the results page reads them from there)
    evaluation_rounds_check()
    round_.refresh_from_db()
    assert round_.figures["edit_distance"] == figures


# ---- Creating a round (the real generation job service) ---------------------------------------


@pytest.fixture
def tiny(settings, tmp_path_factory):
    from tests.training.loop_helpers import tiny_model

    return tiny_model(tmp_path_factory)


def test_creating_a_round_freezes_the_rule_and_queues_a_two_target_generation_job(
    project, personas, tiny, settings, django_capture_on_commit_callbacks
):
    from training.models import GenerationPurpose, GenerationSource
    from training.services.evaluation import evaluation_round_create

    adapter = fake_adapter(project, model=tiny)
    version = adapter.run.dataset_version
    version.storage_path = f"datasets/{version.pk}"
    version.save()
    folder = settings.STORAGE_DIR / version.storage_path
    folder.mkdir(parents=True)
    (folder / "sft.eval.jsonl").write_text(
        '{"prompt": "Q1?", "completion": "A1"}\n{"prompt": "Q2?", "completion": "A2"}\n'
    )
    with django_capture_on_commit_callbacks() as callbacks:
        round_ = evaluation_round_create(
            subject=adapter,
            baseline="base",
            pass_rule={"threshold": 0.55, "min_judged": 2},
            created_by=personas["admin"],
        )
    assert len(callbacks) == 1  # the job is queued once the round is committed
    job = round_.generation_job
    assert round_.status == RoundStatus.GENERATING and round_.pass_rule["threshold"] == 0.55
    assert job.purpose == GenerationPurpose.EVALUATION and job.source == GenerationSource.EVAL_SPLIT
    assert job.dataset_version_id == version.pk and job.total == 4
    targets = [(t.base_model_id, t.adapter_id) for t in job.targets.order_by("position")]
    assert targets == [(tiny.pk, adapter.pk), (tiny.pk, None)]
    assert round_.baseline_base_model_id == tiny.pk and round_.baseline_adapter is None


def test_a_version_without_an_eval_split_is_refused_with_a_clear_message(project, tiny):
    from tests.training.loop_helpers import built_version
    from training.services.evaluation import evaluation_round_create

    adapter = fake_adapter(project, model=tiny, version=built_version(project, eval_rows=0))
    with pytest.raises(ValidationError) as exc:
        evaluation_round_create(subject=adapter)
    (message,) = exc.value.message_dict["dataset_version"]
    assert "has no eval split" in message and "eval fraction" in message
    with pytest.raises(ValidationError) as exc:
        evaluation_round_create(subject=adapter, baseline="promoted")
    assert "baseline" in exc.value.message_dict or "dataset_version" in exc.value.message_dict
