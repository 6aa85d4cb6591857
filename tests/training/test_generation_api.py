# ruff: noqa: F811 (fixtures imported from generation_fixtures are used as arguments)
"""Generation API and pages, persona by persona: managers and admins create, read and
cancel; experts 403; outsiders 404; wrong methods 405; CSRF enforced on the pages; model
output escaped; the OpenAPI schema lists the endpoints; the Try it panel's views."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape

from tests.training.generation_fixtures import (  # noqa: F401 (fixtures)
    adapter,
    data_dir,
    eval_version,
    sft_run,
    tiny,
    tiny_dir,
)
from training.models import GenerationJob, GenerationOutput, GenerationPurpose, JobStatus
from training.services.generation import generation_job_create, generation_job_execute

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

EXPECTED = {"admin": 200, "manager": 200, "expert": 403, "outsider": 404}
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def job(project, tiny, personas):
    return generation_job_create(
        project=project,
        targets=[(tiny, None)],
        source="prompts",
        prompts=["Hi"],
        created_by=personas["manager"],
    )


def body(**changes):
    return {
        "targets": [{"base_model": "tiny"}],
        "source": "prompts",
        "prompts": ["How do I reset my password?", [{"role": "user", "content": "Hi"}]],
        "decoding": {"max_new_tokens": 8, "temperature": 0},
        **changes,
    }


@pytest.mark.parametrize("persona", EXPECTED)
def test_creating_a_job_over_the_api_per_persona(project, tiny, personas, api_for, persona):
    response = api_for(personas[persona]).post(
        f"/api/v1/projects/{project.slug}/generation-jobs/", body(), format="json"
    )
    expected = 201 if EXPECTED[persona] == 200 else EXPECTED[persona]
    assert response.status_code == expected, response.content
    if expected == 201:
        data = response.json()
        assert data["status"] == "queued" and data["total"] == 2 and data["purpose"] == "candidates"
        assert data["targets"] == [
            {"position": 0, "base_model": "tiny", "adapter": None, "tag": "tiny"}
        ]
        assert data["decoding"]["max_new_tokens"] == 8 and data["decoding"]["batch_size"] == 8
    else:
        assert not GenerationJob.objects.exists()


@pytest.mark.parametrize("persona", EXPECTED)
def test_reading_listing_and_cancelling_jobs_per_persona(job, project, personas, api_for, persona):
    client = api_for(personas[persona])
    listing = client.get(f"/api/v1/projects/{project.slug}/generation-jobs/")
    detail = client.get(f"/api/v1/generation-jobs/{job.pk}/")
    cancel = client.post(f"/api/v1/generation-jobs/{job.pk}/cancel/")
    assert (listing.status_code, detail.status_code, cancel.status_code) == (EXPECTED[persona],) * 3
    if EXPECTED[persona] == 200:
        assert [j["id"] for j in listing.json()["results"]] == [job.pk]
        assert detail.json()["outputs"]["results"] == []
        assert cancel.json()["status"] == "cancelled"
        again = client.post(f"/api/v1/generation-jobs/{job.pk}/cancel/")
        assert again.status_code == 400 and "status" in again.json()


def test_wrong_methods_and_anonymous_calls_are_refused(job, project, personas, api_for):
    client = api_for(personas["admin"])
    assert client.delete(f"/api/v1/projects/{project.slug}/generation-jobs/").status_code == 405
    assert client.get(f"/api/v1/generation-jobs/{job.pk}/cancel/").status_code == 405
    assert client.post(f"/api/v1/generation-jobs/{job.pk}/").status_code == 405
    from rest_framework.test import APIClient

    assert APIClient().get(f"/api/v1/generation-jobs/{job.pk}/").status_code == 401


def test_the_api_names_the_bad_field(project, tiny, adapter, personas, api_for):
    client = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/generation-jobs/"
    cases = [
        (body(decoding={"top_p": 2}), "decoding.top_p"),
        (body(targets=[{"base_model": "nope"}]), "targets[0].base_model"),
        (body(targets=[{"base_model": "tiny", "adapter": 999999}]), "targets[0].adapter"),
        (body(source="eval_split", prompts=None), "dataset_version"),
        (body(source="eval_split", prompts=None, dataset_version=999999), "dataset_version"),
        (body(purpose="evaluation"), "purpose"),
        (body(prompts=[""]), "prompts"),
    ]
    for payload, key in cases:
        payload = {k: v for k, v in payload.items() if v is not None}
        response = client.post(url, payload, format="json")
        assert response.status_code == 400 and key in response.json(), (key, response.json())
    ok = client.post(
        url, body(targets=[{"base_model": str(tiny.pk), "adapter": adapter.pk}]), format="json"
    )
    assert ok.status_code == 201 and ok.json()["targets"][0]["tag"] == f"tiny+adapter-{adapter.pk}"


def test_a_prompt_file_goes_up_as_multipart_and_bad_lines_come_back_numbered(
    project, tiny, personas, api_for
):
    client = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/generation-jobs/"
    lines = [{"prompt": "Where is my parcel?", "external_id": "a"}, {"prompt": "Hi"}]
    upload = SimpleUploadedFile(
        "prompts.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()
    )
    response = client.post(
        url,
        {
            "targets": json.dumps([{"base_model": "tiny"}]),
            "source": "file",
            "decoding": json.dumps({"max_new_tokens": 4}),
            "limit": "1",
            "prompts_file": upload,
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["total"] == 1 and response.json()["limit"] == 1
    bad = SimpleUploadedFile("bad.jsonl", b'{"prompt": "ok"}\n{"text": "no"}\n')
    response = client.post(
        url,
        {"targets": json.dumps([{"base_model": "tiny"}]), "source": "file", "prompts_file": bad},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["prompts_file"][0] == (
        "line 2, text: Unknown field; a line has prompt or messages, and external_id."
    )


def test_the_job_detail_pages_its_outputs(project, tiny, personas, api_for):
    job = generation_job_create(
        project=project,
        targets=[(tiny, None)],
        source="prompts",
        prompts=[f"Q{n}" for n in range(3)],
        decoding={"max_new_tokens": 2},
    )
    assert generation_job_execute(job.pk) == JobStatus.SUCCEEDED
    client = api_for(personas["manager"])
    first = client.get(f"/api/v1/generation-jobs/{job.pk}/?page_size=2").json()
    assert first["status"] == "succeeded" and first["tokens_per_s"] > 0
    assert first["outputs"]["count"] == 3 and first["outputs"]["next"]
    assert [o["index"] for o in first["outputs"]["results"]] == [0, 1]
    assert first["outputs"]["results"][0]["target"] == "tiny"
    second = client.get(first["outputs"]["next"]).json()
    assert [o["index"] for o in second["outputs"]["results"]] == [2]


def test_the_openapi_schema_lists_the_generation_endpoints(client, personas):
    client.force_login(personas["admin"])
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    paths = schema["paths"]
    assert set(paths["/api/v1/projects/{slug}/generation-jobs/"]) == {"get", "post"}
    assert set(paths["/api/v1/generation-jobs/{job_id}/"]) == {"get"}
    assert set(paths["/api/v1/generation-jobs/{job_id}/cancel/"]) == {"post"}
    post = paths["/api/v1/projects/{slug}/generation-jobs/"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(post)


# --------------------------------------------------------------------------------------------
# pages


@pytest.mark.parametrize("persona", EXPECTED)
def test_the_generation_pages_per_persona(job, project, personas, client_for, persona):
    client = client_for(personas[persona])
    pages = [
        f"/projects/{project.slug}/generation/",
        f"/projects/{project.slug}/generation/{job.pk}/",
    ]
    for url in pages:
        assert client.get(url).status_code == EXPECTED[persona], url
    cancel = client.post(f"/projects/{project.slug}/generation/{job.pk}/cancel/")
    assert cancel.status_code == (302 if EXPECTED[persona] == 200 else EXPECTED[persona])
    if persona in ("admin", "manager"):
        page = client.get(f"/projects/{project.slug}/generation/").content.decode()
        assert 'id="generation-form"' in page and ">Generation</a>" in page


def test_the_generation_pages_refuse_wrong_methods_and_missing_csrf(
    job, project, personas, client_for
):
    client = client_for(personas["manager"], enforce_csrf=True)
    assert client.post(f"/projects/{project.slug}/generation/", {}).status_code == 403
    other = client_for(personas["manager"])
    assert other.get(f"/projects/{project.slug}/generation/{job.pk}/cancel/").status_code == 405
    assert other.post(f"/projects/{project.slug}/generation/{job.pk}/").status_code == 405
    assert other.get(f"/projects/other-slug/generation/{job.pk}/").status_code == 404


def test_the_form_queues_a_job_or_shows_the_errors_by_field(
    project, tiny, adapter, personas, client_for
):
    client = client_for(personas["manager"])
    url = f"/projects/{project.slug}/generation/"
    form = {
        "targets": [f"base:{tiny.pk}", f"adapter:{adapter.pk}"],
        "source": "prompts",
        "prompts_text": "How do I reset my password?\n\nWhere is my parcel?\n",
        "max_new_tokens": "8",
        "temperature": "0",
        "top_p": "1",
        "seed": "0",
        "batch_size": "4",
    }
    response = client.post(url, form)
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/generation/{job.pk}/")
    assert job.prompts == ["How do I reset my password?", "Where is my parcel?"]
    assert [t.tag for t in job.targets.all()] == ["tiny", f"tiny+adapter-{adapter.pk}"]
    assert job.total == 4 and job.decoding["batch_size"] == 4

    response = client.post(url, {**form, "top_p": "0", "batch_size": "1000"})
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "top_p" in errors and "batch_size" in errors
    response = client.post(url, {**form, "source": "eval_split"})
    assert response.status_code == 400 and "dataset_version" in response.context["form"].errors
    assert GenerationJob.objects.count() == 1


def test_the_job_page_escapes_model_output_and_polls_while_running(
    project, tiny, personas, client_for
):
    job = generation_job_create(
        project=project, targets=[(tiny, None)], source="prompts", prompts=[HOSTILE],
        decoding={"max_new_tokens": 2},
    )  # fmt: skip
    client = client_for(personas["manager"])
    queued = client.get(f"/projects/{project.slug}/generation/{job.pk}/", HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every 2s"' in queued.content.decode()
    assert "HX-Request" in queued["Vary"]
    generation_job_execute(job.pk)
    GenerationOutput.objects.filter(job=job).update(output=HOSTILE)
    page = client.get(f"/projects/{project.slug}/generation/{job.pk}/").content.decode()
    assert HOSTILE not in page and "&lt;script&gt;" in page
    assert 'hx-trigger="every 2s"' not in page  # finished: no more polling


# --------------------------------------------------------------------------------------------
# Try it


def try_it_url(adapter, suffix=""):
    return f"/projects/{adapter.run.dataset_version.project.slug}/adapters/{adapter.pk}/try-it/{suffix}"


@pytest.mark.parametrize("persona", EXPECTED)
def test_try_it_per_persona(project, adapter, personas, client_for, persona):
    client = client_for(personas[persona])
    response = client.post(try_it_url(adapter), {"prompt": "How do I reset my password?"})
    assert response.status_code == EXPECTED[persona]
    if EXPECTED[persona] != 200:
        assert not GenerationJob.objects.exists()
        return
    job = GenerationJob.objects.get()
    assert job.purpose == GenerationPurpose.TRY_IT and job.prompts == [
        "How do I reset my password?"
    ]
    assert [t.tag for t in job.targets.all()] == ["tiny", f"tiny+adapter-{adapter.pk}"]
    assert 'hx-trigger="every 1s"' in response.content.decode()
    assert client.get(try_it_url(adapter, f"{job.pk}/")).status_code == 200
    assert client.get(try_it_url(adapter, "")).status_code == 405
    assert client.post(try_it_url(adapter), {"prompt": "  "}).status_code == 400


def test_try_it_shows_both_answers_escaped_once_the_job_is_done(
    project, adapter, personas, client_for
):
    client = client_for(personas["manager"])
    client.post(try_it_url(adapter), {"prompt": HOSTILE})
    job = GenerationJob.objects.get()
    assert generation_job_execute(job.pk) == JobStatus.SUCCEEDED
    base_output, adapter_output = GenerationOutput.objects.filter(job=job).order_by(
        "target__position"
    )
    GenerationOutput.objects.filter(pk=adapter_output.pk).update(output=HOSTILE)
    html = client.get(try_it_url(adapter, f"{job.pk}/")).content.decode()
    assert HOSTILE not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert f'data-answer="base">{escape(base_output.output)}</pre>' in html
    assert "every 1s" not in html
    # another adapter's page cannot read this job
    other_job = generation_job_create(
        project=project, targets=[(adapter.run.base_model, None)], source="prompts",
        prompts=["x"], purpose=GenerationPurpose.TRY_IT,
    )  # fmt: skip
    assert client.get(try_it_url(adapter, f"{other_job.pk}/")).status_code == 404


def test_the_adapter_page_includes_the_try_it_panel(project, adapter, personas, client_for):
    response = client_for(personas["manager"]).get(
        f"/projects/{project.slug}/adapters/{adapter.pk}/"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="try-it-form"' in html and f'hx-post="{try_it_url(adapter)}"' in html
