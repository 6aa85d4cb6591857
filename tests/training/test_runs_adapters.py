# ruff: noqa: F811 (fixtures imported from test_runs are used as arguments)
"""The adapter page (manifest, metrics, lineage, download, Try it slot), the lineage summary
written into the manifest when a run publishes its adapter, the adapter API's lineage, and
"Train on another base model" (page and API)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.test_runs import sft_version, tiny, tiny_prepared  # noqa: F401 (fixtures)
from training.models import Adapter, RunStatus, TrainingRun
from training.services.runs import base_model_register, run_execute, training_run_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def adapter(tiny, sft_version, personas):
    run = training_run_create(
        user=personas["admin"],
        dataset_version=sft_version,
        base_model=tiny,
        method="sft",
        config={"max_steps": 2},
    )
    assert run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    return Adapter.objects.get(run=run)


@pytest.fixture
def other_model(tiny_prepared):
    """A second base model: a local folder (the same tiny weights), registered by hand."""
    return base_model_register(name="tiny-copy", reference=str(tiny_prepared))


def page_url(adapter, slug=None):
    slug = slug or adapter.run.dataset_version.project.slug
    return f"/projects/{slug}/adapters/{adapter.pk}/"


def rebase_url(adapter):
    return page_url(adapter) + "rebase/"


# --------------------------------------------------------------------------------------------
# lineage in the manifest


def test_a_published_adapter_carries_its_lineage_in_its_manifest(adapter, experts, settings):
    lineage = adapter.manifest["lineage"]
    assert lineage["kind"] == "sft" and lineage["files"] == ["sft.train.lineage.jsonl"]
    assert lineage["rows"] == 6 and lineage["decisions"] == 6
    assert lineage["decisions_selected"] == 6 and lineage["reviews"] == 6
    assert lineage["experts"] == [{"id": experts[0].pk, "username": experts[0].username}]
    assert lineage["guideline_versions"] == sorted(lineage["guideline_versions"])
    on_disk = json.loads((Path(settings.STORAGE_DIR) / adapter.path / "manifest.json").read_text())
    assert on_disk["lineage"] == lineage


def test_the_lineage_counts_the_reviews_and_experts_behind_the_train_rows(
    project, personas, experts, decide_item, build
):
    from curation.services.settings import project_settings_update
    from training.services.runs import lineage_summary

    # overlap 2: two experts agree on each of four items: 4 decisions, 8 reviews, 2 experts
    project_settings_update(project=project, overlap=2)
    for n in range(4):
        decide_item(
            project,
            [(experts[1], "accept", {}), (experts[2], "accept", {})],
            prompt=f"Where is parcel {n}?",
            candidates=[(f"It left the warehouse on day {n}.", "m1")],
        )
    version = build(project, personas["admin"], kinds=["sft"], eval_fraction=0)
    assert version.status == "succeeded", version.error

    lineage = lineage_summary(version, "sft")

    assert lineage["decisions"] == 4 and lineage["rows"] == 4 and lineage["reviews"] == 8
    assert lineage["experts"] == sorted(
        [{"id": e.pk, "username": e.username} for e in experts[1:]], key=lambda e: e["username"]
    )
    assert lineage["decisions_selected"] == 4


# --------------------------------------------------------------------------------------------
# the adapter page


@pytest.mark.parametrize(
    ("persona", "code"), [("admin", 200), ("manager", 200), ("expert", 403), ("outsider", 404)]
)
def test_the_adapter_page_is_for_managers_and_admins(adapter, personas, client_for, persona, code):
    assert client_for(personas[persona]).get(page_url(adapter)).status_code == code


def test_the_adapter_page_shows_manifest_metrics_lineage_download_and_try_it(
    adapter, personas, experts, client_for, project
):
    response = client_for(personas["manager"]).get(page_url(adapter))

    assert response.status_code == 200
    page = response.content.decode()
    run, version = adapter.run, adapter.run.dataset_version
    assert f"/projects/{project.slug}/runs/{run.pk}/" in page
    assert f"/projects/{project.slug}/datasets/{version.pk}/" in page
    assert f"/projects/{project.slug}/adapters/{adapter.pk}/download.zip" in page
    assert version.content_sha256[:12] in page
    assert '<span id="lineage-decisions">6</span>' in page
    assert f'<span id="lineage-experts">{experts[0].username}</span>' in page
    assert experts[1].username not in page
    assert "last_loss" in page and "Final metrics" in page  # metrics
    assert "&quot;run_id&quot;: " + str(run.pk) in page  # the manifest, escaped JSON
    (weights_sha,) = adapter.manifest["base_model"]["weights_sha256"].values()
    assert weights_sha[:12] in page
    assert "training/adapters/try_it.html" in [t.name for t in response.templates]
    assert 'aria-current="page"' in page  # the Adapters nav link
    # managers do not get "Train on another base model"
    assert 'id="rebase-form"' not in page


def test_the_adapter_page_reads_the_lineage_from_the_manifest_not_the_files(
    adapter, personas, experts, client_for, settings
):
    folder = Path(settings.STORAGE_DIR) / adapter.run.dataset_version.storage_path
    for path in folder.glob("*.lineage.jsonl"):
        path.unlink()

    page = client_for(personas["manager"]).get(page_url(adapter)).content.decode()

    assert f'<span id="lineage-experts">{experts[0].username}</span>' in page
    assert "published before adapters carried their lineage" not in page


def test_an_adapter_published_before_manifests_had_lineage_reads_it_from_the_files(
    adapter, personas, experts, client_for
):
    manifest = dict(adapter.manifest)
    del manifest["lineage"]
    Adapter.objects.filter(pk=adapter.pk).update(manifest=manifest)

    response = client_for(personas["manager"]).get(page_url(adapter))
    page = response.content.decode()

    assert f'<span id="lineage-experts">{experts[0].username}</span>' in page
    assert '<span id="lineage-decisions">6</span>' in page
    assert "published before adapters carried their lineage" in page
    listed = client_for(personas["manager"]).get(
        f"/projects/{adapter.run.dataset_version.project.slug}/adapters/"
    )
    assert listed.context["adapters"][0]["experts"] == [experts[0].username]


def test_the_adapter_page_under_another_project_is_404(adapter, personas, client_for):
    from tests.factories import ProjectFactory

    other = ProjectFactory()
    assert client_for(personas["admin"]).get(page_url(adapter, other.slug)).status_code == 404
    assert client_for(personas["admin"]).get("/projects/x/adapters/999999/").status_code == 404


def test_anonymous_visitors_are_sent_to_log_in_from_the_adapter_page(adapter, client):
    response = client.get(page_url(adapter))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_adapter_page_refuses_posts(adapter, personas, client_for):
    assert client_for(personas["admin"]).post(page_url(adapter)).status_code == 405


def test_untrusted_text_in_the_lineage_is_escaped(adapter, personas, client_for, experts):
    experts[0].username = "<script>alert(1)</script>"
    experts[0].save()
    manifest = dict(adapter.manifest)
    del manifest["lineage"]  # read now, with the new name
    Adapter.objects.filter(pk=adapter.pk).update(manifest=manifest)
    page = client_for(personas["admin"]).get(page_url(adapter)).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_adapters_list_and_the_run_page_link_to_the_adapter_page(
    adapter, personas, client_for, project
):
    link = f'href="{page_url(adapter)}"'
    listed = client_for(personas["manager"]).get(f"/projects/{project.slug}/adapters/")
    assert link in listed.content.decode()
    run_page = client_for(personas["manager"]).get(
        f"/projects/{project.slug}/runs/{adapter.run_id}/"
    )
    assert link in run_page.content.decode()


def test_the_adapter_page_makes_a_bounded_number_of_queries(
    adapter, personas, client_for, django_assert_max_num_queries
):
    client = client_for(personas["manager"])
    with django_assert_max_num_queries(12):
        assert client.get(page_url(adapter)).status_code == 200


# --------------------------------------------------------------------------------------------
# the API


def test_the_adapter_api_returns_the_same_lineage(adapter, personas, experts, api_for):
    body = api_for(personas["manager"]).get(f"/api/v1/adapters/{adapter.pk}/").json()
    lineage = body["lineage"]
    assert lineage["run"] == adapter.run_id
    assert lineage["dataset_version"]["id"] == adapter.run.dataset_version_id
    assert lineage["decisions"] == 6 and lineage["reviews"] == 6 and lineage["stored"] is True
    assert lineage["experts"] == [{"id": experts[0].pk, "username": experts[0].username}]
    assert api_for(personas["expert"]).get(f"/api/v1/adapters/{adapter.pk}/").status_code == 403
    assert api_for(personas["outsider"]).get(f"/api/v1/adapters/{adapter.pk}/").status_code == 404


# --------------------------------------------------------------------------------------------
# Train on another base model


def test_admins_see_the_rebase_form_offering_the_other_base_models(
    adapter, other_model, tiny, personas, client_for
):
    response = client_for(personas["admin"]).get(page_url(adapter))
    form = response.context["rebase_form"]
    assert list(form.fields["base_model"].queryset) == [other_model]
    assert 'id="rebase-form"' in response.content.decode()


def test_rebasing_from_the_page_queues_the_same_dataset_and_settings_on_the_chosen_model(
    adapter, other_model, personas, client_for, project
):
    response = client_for(personas["admin"]).post(
        rebase_url(adapter), {"base_model": str(other_model.pk)}
    )

    new = TrainingRun.objects.exclude(pk=adapter.run_id).get()
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{project.slug}/runs/{new.pk}/"
    assert new.status == RunStatus.QUEUED and new.base_model == other_model
    assert new.dataset_version_id == adapter.run.dataset_version_id
    assert new.method == adapter.run.method and new.config == adapter.run.config
    assert new.created_by == personas["admin"] and new.created_via == "web"
    # and it trains
    assert run_execute(run_id=new.pk) == RunStatus.SUCCEEDED
    assert Adapter.objects.get(run=new).manifest["base_model_name"] == "tiny-copy"


def test_rebasing_onto_a_model_not_offered_shows_the_page_again_with_the_error(
    adapter, other_model, tiny, personas, client_for
):
    response = client_for(personas["admin"]).post(rebase_url(adapter), {"base_model": str(tiny.pk)})
    assert response.status_code == 400
    assert "base_model" in response.context["rebase_form"].errors
    assert TrainingRun.objects.count() == 1


@pytest.mark.parametrize(
    ("persona", "code"), [("manager", 403), ("expert", 403), ("outsider", 404)]
)
def test_only_admins_rebase_from_the_page(
    adapter, other_model, personas, client_for, persona, code
):
    response = client_for(personas[persona]).post(
        rebase_url(adapter), {"base_model": str(other_model.pk)}
    )
    assert response.status_code == code
    assert TrainingRun.objects.count() == 1


def test_rebasing_needs_a_post_and_the_csrf_token(adapter, other_model, personas, client_for):
    assert client_for(personas["admin"]).get(rebase_url(adapter)).status_code == 405
    strict = client_for(personas["admin"], enforce_csrf=True)
    assert strict.post(rebase_url(adapter), {"base_model": other_model.pk}).status_code == 403
    assert TrainingRun.objects.count() == 1


@pytest.mark.parametrize(
    ("persona", "code"), [("admin", 201), ("manager", 403), ("expert", 403), ("outsider", 404)]
)
def test_the_rebase_api_is_for_admins(adapter, other_model, personas, api_for, persona, code):
    response = api_for(personas[persona]).post(
        f"/api/v1/adapters/{adapter.pk}/rebase/", {"base_model": other_model.pk}, format="json"
    )
    assert response.status_code == code, response.content
    if code == 201:
        new = TrainingRun.objects.get(pk=response.json()["id"])
        assert new.base_model == other_model and new.created_via == "api"
        assert new.config == adapter.run.config and response.json()["status"] == "queued"
    else:
        assert TrainingRun.objects.count() == 1


def test_the_rebase_api_refuses_the_same_or_an_unknown_base_model_by_field(
    adapter, tiny, personas, api_for
):
    api = api_for(personas["admin"])
    url = f"/api/v1/adapters/{adapter.pk}/rebase/"
    same = api.post(url, {"base_model": "tiny"}, format="json")
    assert same.status_code == 400 and "already trained on tiny" in same.json()["base_model"][0]
    unknown = api.post(url, {"base_model": "nope"}, format="json")
    assert unknown.status_code == 400 and "No base model 'nope'" in unknown.json()["base_model"][0]
    assert api.post(url, {}, format="json").status_code == 400
    assert TrainingRun.objects.count() == 1
