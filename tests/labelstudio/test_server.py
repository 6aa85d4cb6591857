"""Push, pull, amend and webhook against a real Label Studio server (see conftest.py).

Run alone: ``make labelstudio`` once, then
``pytest -m labelstudio tests/labelstudio`` (with the test environment of the README).
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model

from curation.models import Candidate, Item, Membership
from curation.services.imports import import_items_inline
from curation.services.projects import membership_set, project_create
from curation.services.settings import project_settings_update
from feedback.models import (
    AuditAction,
    AuditEvent,
    LabelStudioJob,
    LabelStudioTask,
    Review,
    ReviewRevision,
)
from tests.factories import UserFactory

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

SCHEMA = [
    {"key": "tone", "prompt": "Tone?", "type": "single_choice", "options": ["neutral", "rude"]},
    {"key": "helpful", "prompt": "How helpful?", "type": "rating", "scale": 5, "required": True},
]
SINGLES, PAIRS = 14, 6


@pytest.fixture
def worker(transactional_db, celery_worker):
    return celery_worker


def _wait(job_id: int, timeout: float = 120) -> LabelStudioJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = LabelStudioJob.objects.get(pk=job_id)
        if job.finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job.status} {job.message}")


def _r(from_name, rtype, value, to_name="prompt"):
    return {"from_name": from_name, "to_name": to_name, "type": rtype, "value": value}


def _state(project):
    reviews = {
        (r.item_id, r.expert.email): (
            r.verdict,
            r.candidate_id,
            r.corrected_output,
            r.preferred_candidate_id,
            r.rating,
            r.labels,
            r.revision,
        )
        for r in Review.objects.filter(project=project).select_related("expert")
    }
    return reviews, ReviewRevision.objects.filter(review__project=project).count()


@pytest.mark.django_db(transaction=True)
def test_push_pull_amend_and_webhook_against_a_real_label_studio(
    label_studio, live_server, worker, api_for
):
    admin = UserFactory(username="root", is_staff=True)
    manager = UserFactory(username="mgr")
    project = project_create(name="LS interop", created_by=admin)
    project_settings_update(
        project=project, review_modes=["correct", "label"], label_schema=SCHEMA, overlap=2
    )
    membership_set(project=project, username="mgr", role="manager")
    # The Label Studio admin is a Redline expert already (matched by email); the annotator
    # is unknown to Redline and gets created by the "create" policy.
    known = UserFactory(username="known", email=label_studio.admin_email)
    membership_set(project=project, username="known", role="expert")
    rows = [
        {"external_id": f"s{i}", "prompt": f"Question {i}?", "output": f"Answer {i}."}
        for i in range(SINGLES)
    ] + [
        {
            "external_id": f"p{i}",
            "prompt": f"Compare {i}?",
            "candidates": [
                {"output": f"Left {i}.", "model": "m1"},
                {"output": f"Right {i}.", "model": "m2"},
            ],
        }
        for i in range(PAIRS)
    ]
    import_items_inline(project=project, created_by=admin, items=rows)
    items = {i.external_id: i for i in Item.objects.filter(project=project)}
    cands = {
        ext: list(Candidate.objects.filter(item=item).order_by("position"))
        for ext, item in items.items()
    }
    api = api_for(manager)
    base = f"/api/v1/projects/{project.slug}/label-studio"

    # ---- connect (no webhook yet: Redline's address left out) and test ----
    answer = api.put(
        f"{base}/connection/",
        {
            "url": label_studio.url,
            "token": label_studio.admin_token,
            "unknown_annotators": "create",
        },
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert label_studio.admin_token not in answer.content.decode()
    check = api.post(f"{base}/test/").json()
    assert check["ok"] and check["user_email"] == label_studio.admin_email

    # ---- push 20 items; push again: nothing new ----
    push = _wait(api.post(f"{base}/push/", {}, format="json").json()["id"])
    assert push.status == "succeeded", (push.message, push.errors)
    assert push.counts["pushed"] == SINGLES + PAIRS and push.total == SINGLES + PAIRS
    print(
        f"\npush: {push.total} tasks in {push.seconds:.2f} s = {push.total / push.seconds:.1f} tasks/s"
    )
    again = _wait(api.post(f"{base}/push/", {}, format="json").json()["id"])
    assert again.status == "succeeded" and again.counts.get("pushed", 0) == 0
    conn = project.label_studio
    ls_admin = label_studio.client(label_studio.admin_token)
    remote = list(ls_admin.tasks.list(project=conn.ls_project_id, fields="all"))
    assert len(remote) == SINGLES + PAIRS
    links = dict(
        LabelStudioTask.objects.filter(project=project).values_list("item_id", "ls_task_id")
    )
    for task in remote:
        assert links[task.data["redline_item_id"]] == task.id
        item = Item.objects.get(pk=task.data["redline_item_id"])
        assert task.data["output_a"] == cands[item.external_id][0].output

    # ---- annotate through Label Studio's own API, as annotators do ----
    ls_annotator = label_studio.client(label_studio.annotator_token)
    task_of = {ext: links[item.pk] for ext, item in items.items()}
    expected: dict = {}
    annotator, known_email = label_studio.annotator_email, label_studio.admin_email
    annotation_ids: dict = {}
    for i in range(SINGLES):
        ext = f"s{i}"
        item, cand = items[ext], cands[ext][0]
        labels = [_r("label_helpful", "rating", {"rating": 1 + i % 5})]
        kind = i % 4
        if kind == 0:  # edited text: a correction
            result = [_r("correction", "textarea", {"text": [f"Answer {i}, corrected."]})]
            exp = ("correct", cand.pk, f"Answer {i}, corrected.", None)
        elif kind == 1:  # submitted unchanged: an accept
            result = [_r("correction", "textarea", {"text": [cand.output]})]
            exp = ("accept", cand.pk, "", None)
        elif kind == 2:  # only labels and a rating: an accept
            result = [
                _r("label_tone", "choices", {"choices": ["rude"]}),
                _r("rating", "rating", {"rating": 4}),
            ]
            exp = ("accept", cand.pk, "", None)
        else:
            result = [_r("reject", "choices", {"choices": ["Reject"]})]
            exp = ("reject", cand.pk, "", None)
        made = ls_annotator.annotations.create(
            id=task_of[ext], result=result + labels, lead_time=2.5
        )
        annotation_ids[ext] = made.id
        answers = {"helpful": 1 + i % 5, **({"tone": "rude"} if kind == 2 else {})}
        expected[(item.pk, annotator)] = (*exp, 4 if kind == 2 else None, answers, 1)
    for i in range(PAIRS):
        ext = f"p{i}"
        item, (left, right) = items[ext], cands[ext]
        side = "left" if i % 2 == 0 else "right"
        chosen = left if side == "left" else right
        result = [
            _r("preference", "pairwise", {"selected": side}, to_name="output_a,output_b"),
            _r("label_helpful", "rating", {"rating": 3}),
        ]
        if i == 1:
            result.append(_r("correction", "textarea", {"text": ["Right 1, improved."]}))
            exp = ("correct", chosen.pk, "Right 1, improved.", chosen.pk)
        else:
            exp = ("accept", chosen.pk, "", chosen.pk)
        if i == PAIRS - 1:  # the required label question left unanswered: refused
            result = result[:1]
        else:
            expected[(item.pk, annotator)] = (*exp, None, {"helpful": 3}, 1)
        annotation_ids[ext] = ls_annotator.annotations.create(id=task_of[ext], result=result).id
    for ext in ("s0", "s1", "p0"):  # a second opinion from a known Redline expert
        cand = cands[ext][0]
        ls_admin.annotations.create(
            id=task_of[ext],
            result=[
                _r("label_helpful", "rating", {"rating": 5}),
                *(
                    [_r("preference", "pairwise", {"selected": "left"}, "output_a,output_b")]
                    if ext == "p0"
                    else []
                ),
            ],
        )
        expected[(items[ext].pk, known_email)] = (
            "accept",
            cand.pk,
            "",
            cand.pk if ext == "p0" else None,
            None,
            {"helpful": 5},
            1,
        )

    # ---- pull: the reviews are exactly the annotations ----
    pull = _wait(api.post(f"{base}/pull/").json()["id"])
    assert pull.status == "succeeded", pull.message
    print(
        f"pull: {pull.total} tasks in {pull.seconds:.2f} s = {pull.total / pull.seconds:.1f} tasks/s"
    )
    reviews, revisions = _state(project)
    assert reviews == expected
    assert pull.counts["created"] == len(expected) == SINGLES + PAIRS - 1 + 3
    assert pull.error_count == 1
    assert pull.errors[0]["task"] == task_of[f"p{PAIRS - 1}"]
    assert "labels.helpful" in pull.errors[0]["message"]
    assert pull.unknown_annotators == [{"email": annotator, "action": "added as expert"}]
    created = get_user_model().objects.get(email=annotator)
    assert Membership.objects.get(project=project, user=created).role == "expert"
    assert Review.objects.filter(expert=known).count() == 3
    assert AuditEvent.objects.filter(
        project=project, action=AuditAction.REVIEW_SUBMITTED
    ).count() == len(expected)
    assert Item.objects.get(pk=items["s0"].pk).status == "complete"  # k = 2 reached

    # ---- pull again: nothing changes ----
    second = _wait(api.post(f"{base}/pull/").json()["id"])
    assert second.counts.get("created", 0) == 0 and second.counts.get("amended", 0) == 0
    assert second.counts["unchanged"] == len(expected)
    assert _state(project) == (reviews, revisions)

    # ---- the webhook: registered by a push once Redline's address is known ----
    answer = api.put(
        f"{base}/connection/",
        {"url": label_studio.url, "redline_url": live_server.url, "unknown_annotators": "create"},
        format="json",
    )
    assert answer.status_code == 200 and answer.json()["webhook_url"].startswith(live_server.url)
    hooked = _wait(api.post(f"{base}/push/", {}, format="json").json()["id"])
    assert hooked.status == "succeeded" and hooked.counts.get("pushed", 0) == 0
    project.label_studio.refresh_from_db()
    assert project.label_studio.ls_webhook_id

    # An annotation updated in Label Studio → the webhook → one amendment, nothing else.
    ls_annotator.annotations.update(
        id=annotation_ids["s0"],
        result=[
            _r("correction", "textarea", {"text": ["Answer 0, corrected twice."]}),
            _r("label_helpful", "rating", {"rating": 1}),
        ],
    )
    review = Review.objects.get(item=items["s0"], expert=created)
    deadline = time.monotonic() + 60
    while review.revision == 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        review.refresh_from_db()
    assert review.revision == 2 and review.corrected_output == "Answer 0, corrected twice."
    hook_job = LabelStudioJob.objects.filter(project=project, trigger="webhook").latest("pk")
    hook_job = _wait(hook_job.pk)
    assert hook_job.counts.get("amended") == 1 and hook_job.scope == [task_of["s0"]]
    after, after_revisions = _state(project)
    assert after_revisions == revisions + 1
    changed = {k for k in after if after[k] != reviews[k]}
    assert changed == {(items["s0"].pk, annotator)}
    assert (
        AuditEvent.objects.filter(project=project, action=AuditAction.REVIEW_AMENDED).count() == 1
    )

    # A new annotation arrives the same way, as a new review.
    ls_admin.annotations.create(
        id=task_of["s2"], result=[_r("label_helpful", "rating", {"rating": 2})]
    )
    deadline = time.monotonic() + 60
    while not Review.objects.filter(item=items["s2"], expert=known).exists():
        assert time.monotonic() < deadline, "the webhook pull did not arrive"
        time.sleep(0.2)
    assert Review.objects.get(item=items["s2"], expert=known).verdict == "accept"
