"""The Label Studio API, page, webhook and file import, without a server: access per persona,
the masked token, the webhook's secret, and an export file through the same mapping."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from curation.models import Item
from curation.services.settings import project_settings_update
from feedback.labelstudio import services
from feedback.models import LabelStudioJob, LabelStudioTask, Review
from tests.factories import ProjectFactory, UserFactory, item_add, membership_add

pytestmark = pytest.mark.django_db

TOKEN = "secret-token-0123456789abcdef"


@pytest.fixture
def conn(project, personas):
    return services.connection_set(
        project=project,
        actor=personas["manager"],
        url="http://127.0.0.1:18199",
        token=TOKEN,
        redline_url="https://redline.example.com",
    )


def base(project):
    return f"/api/v1/projects/{project.slug}/label-studio"


@pytest.mark.parametrize(
    ("persona", "code"), [("outsider", 404), ("expert", 403), ("manager", 200), ("admin", 200)]
)
def test_connection_is_for_managers_and_never_shows_the_token(
    conn, project, personas, api_for, persona, code
):
    answer = api_for(personas[persona]).get(f"{base(project)}/connection/")
    assert answer.status_code == code
    if code == 200:
        body = answer.json()
        assert TOKEN not in answer.content.decode() and body["token"].endswith(TOKEN[-4:])
        assert body["webhook_url"] == (
            f"https://redline.example.com/api/v1/projects/{project.slug}/label-studio/webhook/"
        )


def test_saving_without_a_token_keeps_the_stored_one_and_bad_urls_are_refused(
    conn, project, personas, api_for
):
    api = api_for(personas["manager"])
    ok = api.put(f"{base(project)}/connection/", {"url": "https://ls.example.com"}, format="json")
    assert ok.status_code == 200
    conn.refresh_from_db()
    assert conn.token == TOKEN and conn.url == "https://ls.example.com"
    bad = api.put(f"{base(project)}/connection/", {"url": "ftp://x"}, format="json")
    assert bad.status_code == 400 and "url" in bad.json()


def test_test_connection_reports_an_unreachable_server_clearly(conn, project, personas, api_for):
    body = api_for(personas["manager"]).post(f"{base(project)}/test/").json()
    assert body["ok"] is False and "cannot reach Label Studio" in body["message"]


def test_pull_before_any_push_is_refused(conn, project, personas, api_for):
    answer = api_for(personas["manager"]).post(f"{base(project)}/pull/")
    assert answer.status_code == 400 and "Push items first" in str(answer.json())


def test_webhook_needs_the_connection_secret_and_queues_one_pull(conn, project, client):
    conn.ls_project_id = 7
    conn.save()
    url = f"{base(project)}/webhook/"
    payload = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "task": {"id": 42}}
    assert client.post(url, payload, content_type="application/json").status_code == 403
    wrong = {"HTTP_X_REDLINE_WEBHOOK_SECRET": "nope"}
    assert client.post(url, payload, content_type="application/json", **wrong).status_code == 403
    good = {"HTTP_X_REDLINE_WEBHOOK_SECRET": conn.webhook_secret}
    first = client.post(url, payload, content_type="application/json", **good)
    assert first.status_code == 202
    payload["task"]["id"] = 43
    second = client.post(url, payload, content_type="application/json", **good)
    assert second.json()["job"] == first.json()["job"]  # coalesced while queued
    assert LabelStudioJob.objects.get(pk=first.json()["job"]).scope == [42, 43]
    other = {**payload, "project": {"id": 8}}
    assert client.post(url, other, content_type="application/json", **good).status_code == 200
    ignored = {**payload, "action": "PROJECT_UPDATED"}
    assert client.post(url, ignored, content_type="application/json", **good).status_code == 200


@pytest.mark.parametrize(
    ("persona", "code"), [("outsider", 404), ("expert", 403), ("manager", 200)]
)
def test_the_page_is_for_managers_and_masks_the_token(
    conn, project, personas, client_for, persona, code
):
    answer = client_for(personas[persona]).get(f"/projects/{project.slug}/label-studio/")
    assert answer.status_code == code
    if code == 200:
        assert TOKEN not in answer.content.decode() and "Test connection" in answer.content.decode()


def test_page_actions_need_post_and_csrf(conn, project, personas, client_for):
    c = client_for(personas["manager"], enforce_csrf=True)
    assert c.get(f"/projects/{project.slug}/label-studio/pull/").status_code == 405
    assert c.post(f"/projects/{project.slug}/label-studio/pull/").status_code == 403


def _export(project, other_item, mine_item):
    r = lambda name, t, v: {"from_name": name, "to_name": "prompt", "type": t, "value": v}  # noqa: E731
    ann = lambda aid, email, result: {  # noqa: E731
        "id": aid,
        "completed_by": {"id": 1, "email": email},
        "result": result,
        "was_cancelled": False,
        "lead_time": 1.5,
    }
    return [
        {  # a task Redline never pushed: a new item + a correction
            "id": 1,
            "data": {"prompt": "Capital of Peru?", "output": "Quito."},
            "annotations": [
                ann(101, "rev@example.org", [r("correction", "textarea", {"text": ["Lima."]})])
            ],
        },
        {  # one Redline pushed: a reject of the existing item
            "id": 2,
            "data": {"redline_item_id": mine_item.pk, "redline_project": project.slug},
            "annotations": [
                ann(102, "rev@example.org", [r("reject", "choices", {"choices": ["Reject"]})])
            ],
        },
        {  # not ours: an item of another project
            "id": 3,
            "data": {"redline_item_id": other_item.pk, "redline_project": "elsewhere"},
            "annotations": [],
        },
        {  # an unknown result type: that annotation alone is refused
            "id": 4,
            "data": {"prompt": "2+2?", "output": "4"},
            "annotations": [ann(104, "rev@example.org", [r("box", "rectanglelabels", {})])],
        },
        {"id": 5, "data": {"text": "no prompt"}, "annotations": []},  # missing fields
        {  # an annotator Redline does not know: skipped under the default policy
            "id": 6,
            "data": {"prompt": "Hi?", "output": "Hello."},
            "annotations": [ann(106, "stranger@example.org", [])],
        },
    ]


def test_export_file_imports_items_and_reviews_and_reports_each_bad_task(
    project, personas, tmp_path, capsys
):
    reviewer = UserFactory(username="rev", email="rev@example.org")
    membership_add(project, reviewer, "expert")
    mine = item_add(project, candidates=[("Some answer.", "m")])
    other_project_item = item_add(ProjectFactory(), candidates=[("x", "m")])
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_export(project, other_project_item, mine)))
    call_command("import_labelstudio", project.slug, str(path))
    err = capsys.readouterr().err
    job = LabelStudioJob.objects.filter(project=project).latest("pk")
    assert job.status == "succeeded", job.message
    assert job.counts["items_imported"] == 3 and job.counts["created"] == 2
    assert job.counts["skipped"] == 1
    assert {e["task"] for e in job.errors} == {3, 4, 5}
    assert "task 3: The task names Redline item" in err
    by_task = {e["task"]: e["message"] for e in job.errors}
    assert "not an item of this project" in by_task[3]
    assert "no such control" in by_task[4]
    assert "no text 'prompt'" in by_task[5]
    assert job.unknown_annotators == [{"email": "stranger@example.org", "action": "skipped"}]
    peru = Item.objects.get(project=project, external_id="labelstudio-1")
    review = Review.objects.get(item=peru, expert=reviewer)
    assert (review.verdict, review.corrected_output, review.time_spent_ms) == (
        "correct",
        "Lima.",
        1500,
    )
    assert Review.objects.get(item=mine, expert=reviewer).verdict == "reject"
    # importing the same file again changes nothing
    call_command("import_labelstudio", project.slug, str(path))
    again = LabelStudioJob.objects.filter(project=project).latest("pk")
    assert again.counts.get("created", 0) == 0 and again.counts["unchanged"] == 2
    assert Review.objects.filter(project=project).count() == 2
    assert LabelStudioTask.objects.filter(project=project, origin="file").count() == 3


def test_export_upload_through_the_api_runs_as_a_job(project, personas, api_for):
    project_settings_update(project=project, review_modes=["correct"])
    body = [{"id": 9, "data": {"prompt": "Q?", "output": "A."}, "annotations": []}]
    answer = api_for(personas["manager"]).post(
        f"{base(project)}/import/",
        {"file": SimpleUploadedFile("export.json", json.dumps(body).encode())},
        format="multipart",
    )
    assert answer.status_code == 202
    job = services.job_run(job_id=answer.json()["id"])
    assert job.status == "succeeded" and job.counts["items_imported"] == 1
    assert services.job_run(job_id=job.pk) is None  # a redelivered task does nothing
    broken = api_for(personas["manager"]).post(
        f"{base(project)}/import/",
        {"file": SimpleUploadedFile("export.json", b"{not json")},
        format="multipart",
    )
    failed = services.job_run(job_id=broken.json()["id"])
    assert failed.status == "failed" and "Not a Label Studio JSON export" in failed.message
    assert api_for(personas["expert"]).post(f"{base(project)}/import/").status_code == 403
