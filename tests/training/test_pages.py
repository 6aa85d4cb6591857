"""Dataset pages: persona matrix, CSRF, wrong methods, the build form and its live count,
the version page (escaped samples, downloads, progress) and comparisons."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from tests.factories import ProjectFactory
from training.models import DatasetStatus, DatasetVersion
from training.services import dataset_version_request

pytestmark = pytest.mark.django_db

ROLE_MATRIX = [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)]
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> hx-get="/boom"'


@pytest.fixture
def version(project, personas, experts, decide_item, build):
    """A built version whose texts are hostile."""
    decide_item(
        project,
        [(experts[0], "correct", {"corrected_output": HOSTILE + " (fixed)"})],
        prompt=HOSTILE,
        candidates=[(HOSTILE, "m")],
    )
    built = build(project, personas["manager"], eval_fraction=0)
    assert built.status == DatasetStatus.SUCCEEDED, built.error
    return built


def urls(project, version) -> dict[str, str]:
    args = [project.slug, version.pk]
    return {
        "list": reverse("training:dataset_list", args=[project.slug]),
        "count": reverse("training:selection_count", args=[project.slug]),
        "detail": reverse("training:version_detail", args=args),
        "status": reverse("training:version_status", args=args),
        "file": reverse("training:version_file", args=[*args, "sft.train.jsonl"]),
        "lineage": reverse("training:version_file", args=[*args, "sft.train.lineage.jsonl"]),
        "manifest": reverse("training:version_file", args=[*args, "manifest.json"]),
        "zip": reverse("training:version_archive", args=args),
        "compare": reverse("training:version_compare", args=args) + f"?other={version.pk}",
    }


@pytest.mark.parametrize(("persona", "status"), ROLE_MATRIX)
def test_every_page_and_download_by_persona(
    project, personas, version, client_for, persona, status
):
    c = client_for(personas[persona])
    for name, url in urls(project, version).items():
        response = c.get(url)
        assert response.status_code == status, (name, response.status_code)


def test_anonymous_visitors_are_sent_to_log_in(project, version, client):
    for url in urls(project, version).values():
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(("persona", "status"), ROLE_MATRIX)
def test_building_from_the_page_by_persona(
    project, personas, experts, decide_item, client_for, persona, status
):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    url = reverse("training:dataset_list", args=[project.slug])
    response = client_for(personas[persona]).post(
        url,
        {
            "kinds": ["sft"],
            "eval_fraction": "0.1",
            "seed": "0",
            "outcomes": ["accepted"],
            "gold": "include",
            "min_edit_chars": "1",
            "dedup": "on",
        },
    )
    expected = 302 if status == 200 else status
    assert response.status_code == expected
    assert DatasetVersion.objects.exists() is (expected == 302)


def form_data(**overrides):
    data = {
        "kinds": ["sft", "preference", "kto"],
        "eval_fraction": "0.1",
        "seed": "0",
        "outcomes": ["accepted"],
        "gold": "include",
        "min_edit_chars": "1",
        "dedup": "on",
        "system_prompt": "",
    }
    data.update(overrides)
    return data


def test_a_build_from_the_page_queues_after_commit_and_a_repeat_finds_it(
    project,
    personas,
    experts,
    decide_item,
    client_for,
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    from training.tasks import dataset_build_task

    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    sent = []
    monkeypatch.setattr(dataset_build_task, "delay", lambda *a: sent.append(a))
    c = client_for(personas["manager"])
    url = reverse("training:dataset_list", args=[project.slug])
    with django_capture_on_commit_callbacks(execute=True):
        response = c.post(url, form_data(seed="4"), follow=True)
    version = DatasetVersion.objects.get()
    assert sent == [(version.pk,)]
    assert response.redirect_chain[-1][0] == reverse(
        "training:version_detail", args=[project.slug, version.pk]
    )
    assert f"Version {version.pk} is queued for building." in response.content.decode()
    assert version.created_via == "web" and version.params["seed"] == 4
    again = c.post(url, form_data(seed="4"), follow=True)
    assert "Nothing changed since version" in again.content.decode()
    assert DatasetVersion.objects.count() == 1


def test_an_empty_selection_is_refused_on_the_page_with_a_message(project, personas, client_for):
    response = client_for(personas["manager"]).post(
        reverse("training:dataset_list", args=[project.slug]), form_data()
    )
    assert response.status_code == 400
    assert "there is nothing to build" in response.content.decode()
    assert not DatasetVersion.objects.exists()


def test_bad_settings_are_shown_on_their_fields(
    project, personas, experts, decide_item, client_for
):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    response = client_for(personas["manager"]).post(
        reverse("training:dataset_list", args=[project.slug]),
        form_data(kinds=[], eval_fraction="0.9", outcomes=[]),
    )
    assert response.status_code == 400
    form = response.context["form"]
    assert set(form.errors) == {"eval_fraction"}  # the form's own range check first
    response = client_for(personas["manager"]).post(
        reverse("training:dataset_list", args=[project.slug]), form_data(kinds=[], outcomes=[])
    )
    assert set(response.context["form"].errors) == {"kinds", "outcomes"}


def test_pages_refuse_wrong_methods_and_enforce_csrf(project, personas, version, client_for):
    c = client_for(personas["manager"])
    pages = urls(project, version)
    assert c.put(pages["list"]).status_code == 405
    assert c.delete(pages["list"]).status_code == 405
    for name in ("count", "detail", "status", "file", "zip", "compare"):
        assert c.post(pages[name]).status_code == 405, name
    strict = client_for(personas["manager"], enforce_csrf=True)
    assert strict.post(pages["list"], form_data(seed="99")).status_code == 403
    assert DatasetVersion.objects.count() == 1


def test_a_version_is_not_reachable_through_another_projects_url(
    project, personas, version, client_for
):
    other = ProjectFactory()
    url = reverse("training:version_detail", args=[other.slug, version.pk])
    assert client_for(personas["admin"]).get(url).status_code == 404
    url = reverse("training:version_file", args=[other.slug, version.pk, "sft.train.jsonl"])
    assert client_for(personas["admin"]).get(url).status_code == 404


def test_the_live_count_shows_what_the_filters_select(
    project, personas, experts, decide_item, client_for, compare_mode
):
    e = experts[0]
    decide_item(project, [(e, "accept", {})], prompt="A?", candidates=[("a", "m1")])
    decide_item(
        project, [(e, "correct", {"corrected_output": "b!"})], prompt="B?", candidates=[("b", "m2")]
    )
    decide_item(project, [(e, "reject", {})], prompt="C?", candidates=[("c", "m2")])
    c = client_for(personas["manager"])
    page = c.get(reverse("training:dataset_list", args=[project.slug]))
    assert b'data-selected="2"' in page.content  # accepted only, by default
    count = reverse("training:selection_count", args=[project.slug])
    response = c.get(count, form_data(outcomes=["accepted", "rejected"]), HTTP_HX_REQUEST="true")
    assert b'data-selected="3"' in response.content
    summary = response.context["summary"]
    assert (summary.accepted, summary.corrected, summary.rejected) == (1, 1, 1)
    assert b'data-selected="1"' in c.get(count, form_data(models=["m1"])).content
    empty = c.get(count, form_data(min_agreement="1", date_from="2000-01-01", date_to="2000-01-02"))
    assert b"there is nothing to build" in empty.content
    bad = c.get(count, form_data(date_from="2000-01-05", date_to="2000-01-01"))
    assert b"The end date is before the start date." in bad.content


def test_the_version_page_shows_samples_escaped_and_the_manifest(
    project, personas, version, client_for
):
    response = client_for(personas["manager"]).get(urls(project, version)["detail"])
    html = response.content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert 'class="samples" hx-disable' in html
    assert version.content_sha256 in html
    for entry in version.files:
        assert entry["name"] in html and entry["lineage"]["name"] in html
    assert "&quot;content_sha256&quot;" in html  # the manifest, escaped


def test_downloads_stream_the_files_with_their_names(project, personas, version, client_for):
    from training import selectors

    c = client_for(personas["manager"])
    pages = urls(project, version)
    response = c.get(pages["file"])
    assert response.streaming
    body = b"".join(response.streaming_content)
    assert body == (selectors.version_dir(version) / "sft.train.jsonl").read_bytes()
    assert response["Content-Type"] == "application/x-ndjson"
    assert f'filename="dataset-{version.pk}-sft.train.jsonl"' in response["Content-Disposition"]
    assert c.get(pages["manifest"])["Content-Type"] == "application/json"
    archive = c.get(pages["zip"])
    assert archive["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))) as z:
        assert f"dataset-{version.pk}/sft.train.jsonl" in z.namelist()
    for name in ("nope.jsonl", "..", "rowhashes", "manifest.json.bak"):
        url = reverse("training:version_file", args=[project.slug, version.pk, name])
        assert c.get(url).status_code == 404, name


def test_a_queued_version_shows_progress_polling_and_no_files(
    project, personas, experts, decide_item, client_for
):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    version, _ = dataset_version_request(project=project, user=personas["manager"], params={})
    c = client_for(personas["manager"])
    pages = urls(project, version)
    html = c.get(pages["detail"]).content.decode()
    assert 'hx-trigger="every 1s"' in html and "Waiting for a worker" in html
    assert "Download everything" not in html
    assert c.get(pages["file"]).status_code == 404
    assert c.get(pages["zip"]).status_code == 404
    polled = c.get(pages["status"], HTTP_HX_REQUEST="true")
    assert "HX-Refresh" not in polled
    DatasetVersion.objects.filter(pk=version.pk).update(status="failed", error="<b>boom</b>")
    finished = c.get(pages["status"], HTTP_HX_REQUEST="true")
    assert finished["HX-Refresh"] == "true"
    assert "&lt;b&gt;boom&lt;/b&gt;" in finished.content.decode()


def test_comparison_as_a_page_and_as_an_htmx_partial(
    project, personas, experts, decide_item, build, client_for
):
    decide_item(project, [(experts[0], "accept", {})], prompt="One?", candidates=[("1", "a")])
    decide_item(project, [(experts[0], "accept", {})], prompt="Two?", candidates=[("2", "b")])
    old = build(project, personas["manager"], eval_fraction=0, models=["a"])
    new = build(project, personas["manager"], eval_fraction=0)
    c = client_for(personas["manager"])
    url = reverse("training:version_compare", args=[project.slug, new.pk]) + f"?other={old.pk}"
    page = c.get(url)
    assert page.status_code == 200 and "<html" in page.content.decode()
    assert "HX-Request" in page["Vary"]
    partial = c.get(url, HTTP_HX_REQUEST="true")
    assert "<html" not in partial.content.decode()
    sft = next(row for row in partial.context["comparison"] if row.kind == "sft")
    assert (sft.added, sft.removed, sft.common) == (1, 0, 1)
    detail = c.get(reverse("training:version_detail", args=[project.slug, new.pk]))
    assert f'<option value="{old.pk}">' in detail.content.decode()
    compare = reverse("training:version_compare", args=[project.slug, new.pk])
    assert c.get(compare + "?other=x").status_code == 404
    assert c.get(compare).status_code == 404


def test_the_datasets_link_is_shown_to_managers_only(project, personas, client_for):
    url = reverse("curation:project_detail", args=[project.slug])
    target = reverse("training:dataset_list", args=[project.slug])
    assert target in client_for(personas["manager"]).get(url).content.decode()
    assert target not in client_for(personas["expert"]).get(url).content.decode()


def test_the_datasets_page_queries_are_bounded(
    project, personas, experts, decide_item, build, client_for, django_assert_max_num_queries
):
    decide_item(project, [(experts[0], "accept", {})], candidates=[("Paris.", "m")])
    for seed in range(6):
        build(project, personas["manager"], seed=seed)
    c = client_for(personas["manager"])
    url = reverse("training:dataset_list", args=[project.slug])
    with django_assert_max_num_queries(12):
        response = c.get(url)
    assert response.status_code == 200
    assert len(response.context["page"].object_list) == 6
