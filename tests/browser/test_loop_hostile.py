"""Hostile text on the loop's pages, in a real browser: generation jobs (prompts from an
uploaded file, model answers, the job's log and error), the adapter page's Try it panel (the
typed prompt and both answers), an evaluation round's results (prompts, both answers, an
expert's correction), the promotion history (reasons), the retraining page (a cycle's error),
a training run's log tail and error, and the Label Studio page (a job's report, and what a
hostile Label Studio server answers to "Test connection").

Every string a user, a model or a remote server controls carries script tags, event-handler
attributes, javascript: links, htmx attributes, and, where the page shows long text, 200 KB
of it, right-to-left text and emoji. On every page nothing runs (a script that ran would set
``window.__pwned``), no htmx attribute inside the text fetches anything (the network is
watched), and the text reads exactly as written. The ``page`` fixture also fails the test on
any console error (CSP violations included)."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from curation.models import Candidate
from curation.services.queue import queue_claim_next
from curation.services.settings import project_settings_update
from feedback.labelstudio.services import connection_set
from feedback.models import LabelStudioJob
from feedback.services import review_submit
from tests.factories import PASSWORD
from tests.training.loop_helpers import fake_adapter, round_with_answers
from training.models import (
    BaseModel,
    CycleStatus,
    EvaluationItem,
    GenerationJob,
    GenerationOutput,
    GenerationSource,
    JobStatus,
    RetrainingCycle,
    RoundStatus,
    RunStatus,
    TrainingRun,
)
from training.services.evaluation import evaluation_round_close, evaluation_round_generated
from training.services.generation import generation_job_create, generation_job_prompts
from training.services.promotion import promotion_create, promotion_rollback

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
LINK = '<a href="javascript:window.__pwned=1">x</a>'
HTMX = '<div hx-get="/admin/" hx-trigger="load">x</div>'
HOSTILE = f"{SCRIPT} {IMG} {LINK} {HTMX}"
RTL = "مرحبا بالعالم שלום עולם 👋🏽🎉"
BIG = ("lorem ipsum dolor sit amet " * 8000)[:200_000]
# An admin registers base models, but their names reach every loop page: hostile too.
MODEL_NAME = f"m{IMG}"


@pytest.fixture(autouse=True)
def _storage(settings, tmp_path):
    settings.STORAGE_DIR = tmp_path / "storage"


@pytest.fixture
def base(db):
    """A base model by hub id (no files: nothing here loads it)."""
    return BaseModel.objects.create(name=MODEL_NAME, reference="acme/zebrafish-base")


def log_in(page, username):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/$"))


def watch(page) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"requests": [], "dialogs": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    return seen


def assert_inert(page, where: str) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined", where
    assert page.locator("script", has_text="__pwned").count() == 0, where
    assert page.locator("[hx-get='/admin/']").count() == 0, where
    assert page.locator("a[href^='javascript:']").count() == 0, where
    assert page.locator("img[src='x']").count() == 0, where


def visit(page, path: str) -> str:
    response = page.goto(path)
    assert response is not None and response.status == 200, path
    page.wait_for_load_state("networkidle")
    assert_inert(page, path)
    return page.locator("main").inner_text()


def assert_nothing_fetched(page, seen) -> None:
    page.wait_for_timeout(300)  # give a stray hx-trigger="load" its chance
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert seen["dialogs"] == []
    stray = [u for u in seen["requests"] if "/admin/" in u or re.search(r"/x(\?|$)", u)]
    assert not stray, stray


def wait_for_poll(page, path: str) -> None:
    """Wait until the page's htmx polling has fetched ``path`` once more and swapped it."""
    with page.expect_response(
        lambda r: r.url.split("?")[0].endswith(path) and r.request.headers.get("hx-request")
    ):
        pass
    page.wait_for_timeout(150)  # the swap and htmx's processing of the new content


# ---- Generation jobs and Try it ---------------------------------------------------------------

PROMPT_FILE = [
    {"prompt": f"{HOSTILE} {RTL}", "external_id": f"ext {SCRIPT}"},
    {"messages": [{"role": "system", "content": HOSTILE}, {"role": "user", "content": RTL}]},
    {"prompt": BIG},
]


def answer(index: int, tag: str) -> str:
    """What the hostile model writes for prompt ``index``."""
    return {0: f"{HOSTILE} from {tag}", 1: RTL, 2: BIG + SCRIPT}[index]


def test_generation_pages_and_try_it_show_hostile_text_inert(
    page, live_server, project, personas, base
):
    adapter = fake_adapter(project, model=base)
    upload = SimpleUploadedFile(
        "prompts.jsonl",
        "\n".join(json.dumps(line, ensure_ascii=False) for line in PROMPT_FILE).encode(),
        content_type="application/jsonl",
    )
    job = generation_job_create(
        project=project,
        targets=[(base, None), (base, adapter)],
        source=GenerationSource.FILE,
        prompts_file=upload,
        created_by=personas["manager"],
    )
    # What the worker leaves half-way: the first target's answers, the log, still running.
    specs = list(generation_job_prompts(job))
    assert [s.prompt for s in specs] == [PROMPT_FILE[0]["prompt"], "", BIG]
    first, second = job.targets.order_by("position")
    GenerationOutput.objects.bulk_create(
        GenerationOutput(
            job=job,
            target=first,
            index=s.index,
            prompt=s.prompt,
            messages=s.messages,
            output=answer(s.index, first.tag),
            new_tokens=7,
        )
        for s in specs
    )
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, done=3, log=f"batch 1: {HOSTILE}\n{RTL}\n"
    )

    seen = watch(page)
    log_in(page, "mona-manager")
    slug = project.slug
    shown = visit(page, f"/projects/{slug}/generation/")
    assert MODEL_NAME in shown and f"{MODEL_NAME}+adapter-{adapter.pk}" in shown
    # the form's model choices name the base model too
    assert page.locator("#generation-form").get_by_text(MODEL_NAME, exact=True).count() >= 1

    # An uploaded prompt file whose errors quote it: the form comes back (400) with them as text.
    bad_file = "\n".join(
        [
            json.dumps({"messages": [{"role": HOSTILE, "content": "hi"}]}),
            json.dumps({"prompt": "ok", HTMX: 1}),
        ]
    )
    page.locator(f"input[name=targets][value='base:{base.pk}']").check()
    page.locator("select[name=source]").select_option("file")
    page.locator("input[name=prompts_file]").set_input_files(
        {"name": f"{IMG}.jsonl", "mimeType": "application/jsonl", "buffer": bad_file.encode()}
    )
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Start generation").click()
    assert navigation.value.status == 400
    # Chromium logs the 400 document itself as a console error: expected here, and only it.
    expected = [p for p in page.problems if "status of 400 (Bad Request)" in p]
    assert len(expected) == 1, page.problems
    page.problems.remove(expected[0])
    assert_inert(page, "prompt file errors")
    errors = page.locator("#generation-form .errorlist").all_inner_texts()
    assert any(f"got {HOSTILE!r}" in e for e in errors), errors
    assert any(f"line 2, {HTMX}: Unknown field" in e for e in errors), errors
    assert GenerationJob.objects.count() == 1

    detail = f"/projects/{slug}/generation/{job.pk}/"
    visit(page, detail)
    prompts = page.locator(".generation-outputs pre.prompt").all_inner_texts()
    outputs = page.locator(".generation-outputs pre.output").all_inner_texts()
    assert prompts[0] == f"{HOSTILE} {RTL}"
    assert prompts[1].startswith(f"system: {HOSTILE}\nuser: {RTL}")
    assert len(prompts[2]) >= 199_000
    assert outputs[0] == f"{HOSTILE} from {first.tag}"
    assert outputs[1] == RTL
    assert len(outputs[2]) >= 200_000 and outputs[2].endswith(SCRIPT)
    page.locator("#generation-status summary").click()  # open the log
    log = page.locator("#generation-status .log-tail").inner_text()
    assert log.rstrip("\n") == f"batch 1: {HOSTILE}\n{RTL}"

    # The worker finishes the second target, then fails with a hostile error: the page, which
    # polls itself, swaps the new answers in and stays inert.
    GenerationOutput.objects.bulk_create(
        GenerationOutput(
            job=job,
            target=second,
            index=s.index,
            prompt=s.prompt,
            messages=s.messages,
            output=answer(s.index, second.tag),
        )
        for s in specs
    )
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED,
        done=6,
        error=f"RuntimeError: {HOSTILE}",
        finished_at=timezone.now(),
    )
    wait_for_poll(page, detail)
    page.locator(".generation-status .error").wait_for()
    assert_inert(page, "after the poll")
    assert page.locator(".generation-status .error").inner_text() == f"RuntimeError: {HOSTILE}"
    outputs = page.locator(".generation-outputs pre.output").all_inner_texts()
    assert f"{HOSTILE} from {second.tag}" in outputs and len(outputs) == 6
    assert page.locator("#generation-status[hx-get]").count() == 0  # finished: no more polls

    # Try it: the manager types a hostile prompt; the worker answers with hostile text.
    adapter_page = f"/projects/{slug}/adapters/{adapter.pk}/"
    visit(page, adapter_page)
    typed = f"{HOSTILE} {RTL}"
    page.locator("#try-it-prompt").fill(typed)
    with page.expect_response(lambda r: "/try-it/" in r.url and r.request.method == "POST"):
        page.get_by_role("button", name="Generate both answers").click()
    page.locator("#try-it-result[hx-get]").wait_for()  # polling while the job is queued
    assert page.url.endswith(adapter_page)
    try_job = GenerationJob.objects.filter(purpose="try_it").get()
    assert try_job.prompts == [typed]
    for target in try_job.targets.all():
        text = f"{HOSTILE} base says" if target.adapter_id is None else BIG + HTMX
        GenerationOutput.objects.create(
            job=try_job, target=target, index=0, prompt=try_job.prompts[0], output=text
        )
    GenerationJob.objects.filter(pk=try_job.pk).update(
        status=JobStatus.SUCCEEDED, done=2, finished_at=timezone.now()
    )
    page.locator("[data-answer=adapter]").wait_for(timeout=10_000)
    assert_inert(page, "try it")
    assert page.locator("[data-answer=base]").inner_text() == f"{HOSTILE} base says"
    assert page.locator("[data-answer=adapter]").inner_text() == BIG + HTMX
    assert MODEL_NAME in page.locator(".try-it-answers h3").first.inner_text()

    # The typed prompt on the Try it job's own page.
    visit(page, f"/projects/{slug}/generation/{try_job.pk}/")
    assert page.locator(".generation-outputs pre.prompt").first.inner_text() == typed

    assert_nothing_fetched(page, seen)


# ---- Evaluation rounds, models, retraining, runs ----------------------------------------------

ROUND_ANSWERS = [
    (f"{HOSTILE} {RTL}", f"subject {HOSTILE}", f"baseline {HOSTILE}"),
    (BIG, BIG + SCRIPT, f"{RTL} {IMG}"),
    (f"tie? {LINK}", f"same {HTMX}", f"same {HTMX}"),
]
CORRECTION = f"corrected {HOSTILE} {RTL}"


def judge_round(round_, expert):
    """The expert corrects the subject's answer to prompt 0, prefers the baseline on 1 and
    calls 2 a tie (through the queue and review_submit, as the review page does)."""
    links = {e.item_id: e for e in EvaluationItem.objects.filter(round=round_)}
    while (claim := queue_claim_next(project=round_.project, expert=expert)) is not None:
        link = links[claim.item.pk]
        by_position = {c.position: c.pk for c in Candidate.objects.filter(item_id=claim.item.pk)}
        subject = by_position[link.subject_position]
        baseline = by_position[1 - link.subject_position]
        if link.index == 0:
            fields = {
                "verdict": "correct",
                "preferred_candidate": subject,
                "corrected_output": CORRECTION,
            }
        elif link.index == 1:
            fields = {"verdict": "accept", "preferred_candidate": baseline}
        else:
            fields = {"verdict": "accept", "tie": True}
        review_submit(item=claim.item, expert=expert, rationale=HOSTILE, **fields)


def test_round_results_models_retraining_and_run_pages_show_hostile_text_inert(
    page, live_server, project, personas, base
):
    admin = personas["admin"]
    project_settings_update(project=project, review_modes=["correct", "compare"])
    adapter = fake_adapter(project, model=base)
    round_ = round_with_answers(adapter, ROUND_ANSWERS, pass_rule={"min_judged": 1})
    evaluation_round_generated(job=round_.generation_job)
    judge_round(round_, personas["expert"])
    round_ = evaluation_round_close(round_=round_, closed_by=admin)
    assert round_.status == RoundStatus.COMPLETE
    failed_round = round_with_answers(adapter, [("q", "a", "b")])
    failed_round.status, failed_round.error = RoundStatus.FAILED, f"Generation failed: {HOSTILE}"
    failed_round.save(update_fields=["status", "error"])

    other = fake_adapter(project, model=base)
    first = promotion_create(
        project=project, adapter=other, user=admin, override=True, reason=f"{HOSTILE} {RTL}"
    )
    promotion_create(
        project=project, adapter=adapter, user=admin, reason=f"passed {IMG}", override=True
    )
    promotion_rollback(project=project, to=first, user=admin, reason=f"rollback {HTMX}")
    RetrainingCycle.objects.create(
        project=project,
        trigger="drift",
        status=CycleStatus.FAILED,
        step="training",
        error=f"Training failed: {HOSTILE}",
    )
    # A run still training (its page polls) whose log holds dataset text, and a failed run.
    running = TrainingRun.objects.create(
        dataset_version=adapter.run.dataset_version,
        base_model=base,
        method="sft",
        config={"method": "sft"},
        status=RunStatus.RUNNING,
        phase="training",
        step=3,
        total_steps=10,
        log=f"step 3 sample: {HOSTILE}\n{BIG}\n{RTL}",
    )
    failed = TrainingRun.objects.create(
        dataset_version=adapter.run.dataset_version,
        base_model=base,
        method="sft",
        config={"method": "sft"},
        status=RunStatus.FAILED,
        error=f"ValueError: bad row {HOSTILE}",
        log=f"Traceback: {SCRIPT}",
    )

    seen = watch(page)
    log_in(page, "mona-manager")
    slug = project.slug
    shown = visit(page, f"/projects/{slug}/evaluations/")
    assert f"{MODEL_NAME} (base)" in shown

    shown = visit(page, f"/projects/{slug}/evaluations/{round_.pk}/")
    examples = page.locator("article.example")
    assert examples.count() == 3
    texts = page.locator("article.example .model-text").all_inner_texts()
    assert f"{HOSTILE} {RTL}" in texts  # the prompt
    assert f"subject {HOSTILE}" in texts and f"baseline {HOSTILE}" in texts
    assert CORRECTION in texts  # the expert's correction, as the final text
    assert f"{RTL} {IMG}" in texts and f"same {HTMX}" in texts
    assert max(len(t) for t in texts) >= 200_000
    assert MODEL_NAME in shown

    visit(page, f"/projects/{slug}/evaluations/{failed_round.pk}/")
    assert page.locator(".round-results .error").inner_text() == f"Generation failed: {HOSTILE}"

    for persona in ("mona-manager", "ada-admin"):
        if persona == "ada-admin":
            page.context.clear_cookies()
            log_in(page, persona)
        visit(page, f"/projects/{slug}/models/")
        reasons = page.locator(".promotions-table td[hx-disable]").all_inner_texts()
        assert reasons == [f"rollback {HTMX}", f"passed {IMG}", f"{HOSTILE} {RTL}"], persona
        assert page.locator("#current-model").inner_text().count(HTMX) == 1

    visit(page, f"/projects/{slug}/retraining/")
    assert page.locator(".cycles-table .error").inner_text() == f"Training failed: {HOSTILE}"

    run_page = f"/projects/{slug}/runs/{running.pk}/"
    visit(page, run_page)
    page.locator("#run-status summary").click()  # open the log
    log = page.locator("#run-status .log-tail").inner_text()
    assert log == f"step 3 sample: {HOSTILE}\n{BIG}\n{RTL}"
    wait_for_poll(page, run_page)  # the status polls itself: still inert after a swap
    assert_inert(page, "run page after a poll")
    assert len(page.locator("#run-status .log-tail").text_content()) > 200_000

    visit(page, f"/projects/{slug}/runs/{failed.pk}/")
    assert page.locator("#run-status .error").inner_text() == f"ValueError: bad row {HOSTILE}"
    assert page.locator("#run-status .log-tail").text_content() == f"Traceback: {SCRIPT}"

    assert_nothing_fetched(page, seen)


# ---- Label Studio -----------------------------------------------------------------------------


class HostileLabelStudio(BaseHTTPRequestHandler):
    """Answers every request as a hostile server would: 200 with a hostile e-mail address for
    the token check, or 401 with a hostile detail when ``status`` says so."""

    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.status == 200:
            body = {"id": 7, "email": f"{HOSTILE}@evil.example"}
        else:
            body = {"detail": f"{HOSTILE} {RTL}"}
        data = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_labelstudio():
    server = ThreadingHTTPServer(("127.0.0.1", 18801), HostileLabelStudio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    HostileLabelStudio.status = 200


def test_the_label_studio_page_shows_reports_and_server_answers_inert(
    page, live_server, project, personas, hostile_labelstudio
):
    connection_set(
        project=project,
        actor=personas["manager"],
        url="http://127.0.0.1:18801",
        token="hostile-token",
    )
    now = timezone.now()
    errors = [
        {"task": 11, "annotation": 5, "item": None, "message": f"task 11: {HOSTILE}"},
        {"task": None, "annotation": None, "item": 3, "message": f"{RTL} {IMG}"},
    ]
    LabelStudioJob.objects.create(
        project=project,
        kind="pull",
        status="succeeded",
        trigger="webhook",
        total=2,
        done=2,
        counts={"reviews_created": 1},
        errors=errors,
        error_count=4,
        unknown_annotators=[{"email": f"{SCRIPT}@evil.example", "action": "skipped"}],
        message=f"Pulled 2 tasks: {HOSTILE}",
        created_at=now,
        started_at=now,
        finished_at=now,
        seconds=1.5,
    )
    LabelStudioJob.objects.create(
        project=project,
        kind="push",
        status="failed",
        message=f"Creating tasks: Label Studio answered 400: {BIG}",
        created_at=now - timedelta(minutes=1),
        finished_at=now,
    )

    seen = watch(page)
    log_in(page, "mona-manager")
    path = f"/projects/{project.slug}/label-studio/"
    visit(page, path)
    job = page.locator("#ls-job")
    assert job.locator("p.notice").inner_text() == f"Pulled 2 tasks: {HOSTILE}"
    problems = job.locator(".ls-errors tbody tr td:last-child").all_inner_texts()
    assert problems == [f"task 11: {HOSTILE}", f"{RTL} {IMG}"]
    assert job.locator("ul li").inner_text() == f"{SCRIPT}@evil.example: skipped"
    reports = page.locator(".ls-jobs tbody tr td:last-child").all_inner_texts()
    assert reports[0] == f"Pulled 2 tasks: {HOSTILE}"
    assert len(reports[1]) > 200_000

    # "Test connection": what the server says comes back through htmx as text.
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#ls-test-result p[data-ok=true]")
    result.wait_for()
    assert_inert(page, "test connection, 200")
    assert result.inner_text() == (
        f"Connected to http://127.0.0.1:18801 as {HOSTILE}@evil.example."
    )
    HostileLabelStudio.status = 401
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#ls-test-result p[data-ok=false]")
    result.wait_for()
    assert_inert(page, "test connection, 401")
    assert f"{HOSTILE} {RTL}"[:200] in result.inner_text()
    assert result.inner_text().startswith("Checking the token: Label Studio answered 401")

    assert_nothing_fetched(page, seen)
