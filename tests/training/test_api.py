"""Dataset API: build (201 new, 200 existing), list, detail, file downloads; persona
matrix, CSRF on session posts, wrong methods, anonymous 401."""

from __future__ import annotations

import pytest

from tests.factories import ProjectFactory
from training.models import DatasetVersion

pytestmark = pytest.mark.django_db

ROLE_MATRIX = [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)]


@pytest.fixture
def decided(project, experts, decide_item):
    decide_item(
        project,
        [(experts[0], "correct", {"corrected_output": "Paris, France."})],
        candidates=[("Paris.", "m")],
    )


@pytest.fixture
def version(project, personas, decided, build):
    return build(project, personas["manager"], eval_fraction=0)


def api_urls(project, version) -> dict[str, str]:
    return {
        "list": f"/api/v1/projects/{project.slug}/datasets/",
        "detail": f"/api/v1/datasets/{version.pk}/",
        "file": f"/api/v1/datasets/{version.pk}/files/sft.train.jsonl",
        "lineage": f"/api/v1/datasets/{version.pk}/files/sft.train.lineage.jsonl",
        "manifest": f"/api/v1/datasets/{version.pk}/files/manifest.json",
    }


@pytest.mark.parametrize(("persona", "status"), ROLE_MATRIX)
def test_reads_and_downloads_by_persona(project, personas, version, api_for, persona, status):
    c = api_for(personas[persona])
    for name, url in api_urls(project, version).items():
        assert c.get(url).status_code == status, name


@pytest.mark.parametrize(("persona", "status"), ROLE_MATRIX)
def test_building_by_persona(project, personas, decided, api_for, persona, status):
    response = api_for(personas[persona]).post(
        f"/api/v1/projects/{project.slug}/datasets/", {"kinds": ["sft"]}, format="json"
    )
    expected = 201 if status == 200 else status
    assert response.status_code == expected
    assert DatasetVersion.objects.exists() is (expected == 201)


def test_a_build_answers_201_then_200_with_the_same_version(project, personas, decided, api_for):
    c = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/datasets/"
    body = {
        "kinds": ["sft", "preference"],
        "eval_fraction": 0.2,
        "seed": 7,
        "outcomes": ["accepted"],
        "labels": {},
        "system_prompt": "Be brief.",
    }
    first = c.post(url, body, format="json")
    assert first.status_code == 201
    data = first.json()
    assert data["status"] == "queued" and data["project"] == project.slug
    assert data["created_by"] == "mona-manager" and data["created_via"] == "api"
    assert data["kinds"] == ["sft", "preference"]
    assert data["params"]["seed"] == 7 and data["params"]["options"]["system_prompt"] == "Be brief."
    again = c.post(url, body, format="json")
    assert again.status_code == 200 and again.json()["id"] == data["id"]
    assert DatasetVersion.objects.count() == 1


def test_build_errors_name_the_field_and_an_empty_selection_is_400(
    project, personas, api_for, decided
):
    c = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/datasets/"
    response = c.post(url, {"kinds": ["nope"], "seed": "x"}, format="json")
    assert response.status_code == 400 and set(response.json()) == {"kinds", "seed"}
    response = c.post(url, {"eval_fraction": 0.9, "labels": {"tone": "warm"}}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"eval_fraction", "labels.tone"}
    response = c.post(url, {"models": ["no-such-model"]}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "filters": ["No final decisions match these filters: there is nothing to build."]
    }
    assert not DatasetVersion.objects.exists()


def test_list_and_detail_show_files_with_download_urls(project, personas, version, api_for):
    c = api_for(personas["manager"])
    listing = c.get(f"/api/v1/projects/{project.slug}/datasets/").json()
    assert [v["id"] for v in listing["results"]] == [version.pk]
    detail = c.get(f"/api/v1/datasets/{version.pk}/").json()
    assert detail["status"] == "succeeded"
    assert detail["content_sha256"] == version.content_sha256
    assert detail["manifest"]["files"] == version.manifest["files"]
    sft = next(f for f in detail["files"] if f["name"] == "sft.train.jsonl")
    assert sft["url"] == f"/api/v1/datasets/{version.pk}/files/sft.train.jsonl"
    assert sft["lineage"]["url"] == f"/api/v1/datasets/{version.pk}/files/sft.train.lineage.jsonl"
    download = c.get(sft["url"], HTTP_ACCEPT="application/octet-stream")
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    assert body == b'{"prompt":"What is the capital of France?","completion":"Paris, France."}\n'
    assert c.get(f"/api/v1/datasets/{version.pk}/files/rowhashes").status_code == 404
    assert c.get(f"/api/v1/datasets/{version.pk}/files/sft.eval.jsonl").status_code == 404


def test_list_holds_only_the_projects_own_versions(project, personas, version, api_for):
    other = ProjectFactory()
    response = api_for(personas["admin"]).get(f"/api/v1/projects/{other.slug}/datasets/")
    assert response.json()["results"] == []


def test_api_refuses_wrong_methods(project, personas, version, api_for):
    c = api_for(personas["manager"])
    urls = api_urls(project, version)
    assert c.put(urls["list"], {}, format="json").status_code == 405
    assert c.delete(urls["list"]).status_code == 405
    for name in ("detail", "file"):
        assert c.post(urls[name], {}, format="json").status_code == 405
        assert c.delete(urls[name]).status_code == 405


def test_api_session_posts_need_csrf(project, personas, decided):
    from rest_framework.test import APIClient

    c = APIClient(enforce_csrf_checks=True)
    c.force_login(personas["manager"])
    response = c.post(f"/api/v1/projects/{project.slug}/datasets/", {}, format="json")
    assert response.status_code == 403
    assert not DatasetVersion.objects.exists()


def test_api_unauthenticated_gets_401(project, version):
    from rest_framework.test import APIClient

    for url in api_urls(project, version).values():
        assert APIClient().get(url).status_code == 401


def test_the_schema_describes_the_dataset_endpoints(personas, client_for):
    schema = client_for(personas["admin"]).get("/api/schema/?format=json").json()
    assert "/api/v1/projects/{slug}/datasets/" in schema["paths"]
    assert "/api/v1/datasets/{version_id}/files/{name}" in schema["paths"]
