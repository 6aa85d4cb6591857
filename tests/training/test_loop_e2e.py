"""The whole loop on the tiny model, through the real Redis broker and a real Celery worker:
items imported → reviews through the services → dataset version → SFT run → evaluation
round whose blind pairwise items reveal no model name (API and HTML) → simulated judgments
→ win rate and Wilson interval → promotion → ``current-model``. Prints the loop's wall
time (run with ``-s`` to see it)."""

from __future__ import annotations

import time

import pytest

from curation.models import Candidate
from curation.services.imports import import_items_inline
from curation.services.queue import queue_claim_next
from feedback.services import review_submit
from tests.training.loop_helpers import tiny_model
from training.models import (
    DatasetVersion,
    EvaluationItem,
    EvaluationRound,
    JobStatus,
    RoundStatus,
    TrainingRun,
)
from training.services.evaluation import wilson_interval

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QA = [
    ("How do I reset my password?", "Use the link on the sign-in page."),
    ("Where is my parcel?", "It left our warehouse today."),
    ("Can I return a sale item?", "Yes, within 30 days."),
    ("How do I delete my account?", "Go to Settings, then Account."),
    ("Do you ship abroad?", "Yes, to 40 countries."),
    ("How do I change my plan?", "Open Billing and pick a plan."),
    ("Can I pay by invoice?", "Yes, for yearly plans."),
    ("Where do I find my receipts?", "Under Billing, then History."),
    ("How do I add a user?", "Open Team and press Invite."),
    ("Is there a mobile app?", "Yes, for iOS and Android."),
    ("How do I export my data?", "Settings, then Export."),
    ("Can I change my email?", "Yes, under Profile."),
    ("What are your opening hours?", "Nine to five on weekdays."),
    ("How do I cancel?", "Billing, then Cancel plan."),
    ("Do you offer refunds?", "Within 14 days of purchase."),
    ("How do I contact support?", "Write to help@example.org."),
]


def wait_for(read, done, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if done(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not finish in {timeout:.0f} s: {value}")


MODEL_NAMES = ["tiny", "adapter", "prod-model-v1"]


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [name for name in MODEL_NAMES if name in lowered]


def test_the_whole_loop_on_the_tiny_model(
    project, personas, experts, api_for, client_for, celery_worker, tmp_path_factory
):
    from curation.services.settings import project_settings_update

    tiny_model(tmp_path_factory)  # prepared once per session: setup, not the loop
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def mark(step: str) -> None:
        timings[step] = round(time.perf_counter() - started, 2)

    project_settings_update(project=project, review_modes=["correct", "compare"])
    manager, admin, expert = personas["manager"], personas["admin"], personas["expert"]

    # 1. items imported (what the production model said)
    job = import_items_inline(
        project=project,
        created_by=manager,
        items=[
            {
                "external_id": f"q-{i}",
                "prompt": q,
                "output": f"Not sure ({i}).",
                "model": "prod-model-v1",
            }
            for i, (q, _) in enumerate(QA)
        ],  # fmt: skip
    )
    assert job.imported_count == len(QA), job.errors

    # 2. reviews through the services: every answer corrected by an expert
    answers = dict(QA)
    while (claim := queue_claim_next(project=project, expert=experts[0])) is not None:
        review_submit(
            item=claim.item,
            expert=experts[0],
            verdict="correct",
            corrected_output=answers[claim.item.prompt],
        )
    mark("reviewed")

    # 3. a dataset version, built by the worker
    response = api_for(manager).post(
        f"/api/v1/projects/{project.slug}/datasets/",
        {"kinds": ["sft"], "eval_fraction": 0.3, "seed": 1},
        format="json",
    )
    assert response.status_code == 201, response.content
    version = wait_for(
        lambda: DatasetVersion.objects.get(pk=response.json()["id"]),
        lambda v: v.finished,
        timeout=120,
        what="the dataset build",
    )
    assert version.status == "succeeded", version.error
    assert version.row_counts["sft"]["eval"] >= 3, version.row_counts
    mark("dataset built")

    # 4. an SFT run, trained by the worker
    response = api_for(admin).post(
        "/api/v1/training-runs/",
        {"dataset": version.pk, "base_model": "tiny", "method": "sft",
         "config": {"max_steps": 8, "eval_steps": 4}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    run = wait_for(
        lambda: TrainingRun.objects.get(pk=response.json()["id"]),
        lambda r: r.finished,
        timeout=300,
        what="the training run",
    )
    assert run.status == "succeeded", run.error + run.log[-2000:]
    adapter = run.adapter
    mark("trained")

    # 5. an evaluation round: both answers generated by the worker, then blind items
    response = api_for(admin).post(
        f"/api/v1/projects/{project.slug}/evaluations/",
        {"adapter": adapter.pk, "baseline": "base", "pass_rule": {"min_judged": 3},
         "decoding": {"max_new_tokens": 12, "temperature": 0}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    round_ = wait_for(
        lambda: EvaluationRound.objects.select_related("generation_job").get(
            pk=response.json()["id"]
        ),
        lambda r: r.status != RoundStatus.GENERATING,
        timeout=300,
        what="the round's generation",
    )
    assert round_.generation_job.status == JobStatus.SUCCEEDED, round_.generation_job.log
    assert round_.status == RoundStatus.JUDGING, round_.error
    links = {e.item_id: e for e in EvaluationItem.objects.filter(round=round_)}
    eval_prompts = version.row_counts["sft"]["eval"]
    assert len(links) == eval_prompts
    mark("round judging")

    # ... whose items name no model, for an expert, in the API and the HTML
    claim = api_for(expert).post(f"/api/v1/projects/{project.slug}/queue/claim/")
    assert claim.status_code == 200
    item = claim.json()["item"]
    assert item["id"] in links and not leaks(claim.content.decode())
    detail = api_for(expert).get(f"/api/v1/items/{item['id']}/")
    assert detail.status_code == 200 and not leaks(detail.content.decode())
    page = client_for(expert).get(f"/projects/{project.slug}/review/", follow=True)
    html = page.content.decode()
    assert "Output A" in html and "Output B" in html and not leaks(html)
    # the expert gives the held item back: the judgments below come through the services
    api_for(expert).post(f"/api/v1/items/{item['id']}/lease/release/")

    # 6. simulated judgments through the review service: the subject wins all but one tie
    tie_index = min(e.index for e in links.values())
    judged = 0
    while (claim := queue_claim_next(project=project, expert=expert)) is not None:
        link = links[claim.item.pk]
        if link.index == tie_index:
            review_submit(item=claim.item, expert=expert, verdict="accept", tie=True)
        else:
            subject = Candidate.objects.get(item=claim.item, position=link.subject_position)
            review_submit(
                item=claim.item, expert=expert, verdict="accept", preferred_candidate=subject.pk
            )
        judged += 1
    assert judged == len(links)

    # 7. the beat check (run by the worker) closes the round
    from training.tasks import evaluation_rounds_check_task

    evaluation_rounds_check_task.delay()
    round_ = wait_for(
        lambda: EvaluationRound.objects.get(pk=round_.pk),
        lambda r: r.status == RoundStatus.COMPLETE,
        timeout=60,
        what="closing the round",
    )
    n = len(links)
    assert (round_.wins, round_.ties, round_.losses) == (n - 1, 1, 0)
    assert round_.win_rate == pytest.approx((n - 1 + 0.5) / n)
    low, high = wilson_interval(n - 1 + 0.5, n)
    assert (round_.ci_low, round_.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert round_.passed is (low > 0.5)
    assert round_.figures["subject_eval_loss"] == run.eval_loss
    mark("round closed")

    # 8. promote (an override when the interval is too wide to pass on this few prompts)
    body = {"adapter": adapter.pk}
    if not round_.passed:
        body.update(override=True, reason=f"Only {n} held-out prompts in the test.")
    promoted = api_for(admin).post(
        f"/api/v1/projects/{project.slug}/promotions/", body, format="json"
    )
    assert promoted.status_code == 201, promoted.content
    assert promoted.json()["evaluation_round"] == (round_.pk if round_.passed else None)

    # 9. current-model answers
    current = api_for(expert).get(f"/api/v1/projects/{project.slug}/current-model/")
    assert current.status_code == 200
    body = current.json()
    assert body["base_model"]["name"] == "tiny" and body["adapter"]["id"] == adapter.pk
    names = {f["name"] for f in body["adapter"]["files"]}
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names
    download = api_for(manager).get(body["adapter"]["download_url"])
    assert download.status_code == 200
    mark("promoted")
    total = time.perf_counter() - started
    print(
        f"\nLOOP WALL TIME {total:.1f} s on the tiny model ({len(QA)} items, "
        f"{version.row_counts['sft']['train']} train / {eval_prompts} eval rows, "
        f"{run.total_steps} steps, {n} blind items); steps at {timings}"
    )
