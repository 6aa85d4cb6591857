# ruff: noqa: F811 (fixtures imported from test_runs are used as arguments)
"""The training pages: the "Train adapter" form on a dataset version's page (admins only)
and the project's adapter registry with lineage and a zip download."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.training.test_runs import sft_version, tiny, tiny_prepared  # noqa: F401 (fixtures)
from training.models import Adapter, RunStatus, TrainingRun
from training.services.runs import run_execute, training_run_create

pytestmark = pytest.mark.django_db

SETTINGS = {
    "method": "sft",
    "lora_r": "4",
    "lora_alpha": "8",
    "learning_rate": "0.001",
    "num_epochs": "2",
    "max_steps": "3",
    "batch_size": "2",
}


def version_url(version):
    return f"/projects/{version.project.slug}/datasets/{version.pk}/"


def launch_url(version):
    return f"/projects/{version.project.slug}/datasets/{version.pk}/train/"


def form_data(model, **changes):
    return {**SETTINGS, "base_model": str(model.pk), **changes}


@pytest.mark.parametrize(
    "persona, shown", [("admin", True), ("manager", False), ("expert", None), ("outsider", None)]
)
def test_only_admins_see_the_train_adapter_form_on_the_version_page(
    tiny, sft_version, personas, client_for, persona, shown
):
    response = client_for(personas[persona]).get(version_url(sft_version))
    if shown is None:
        assert response.status_code == (403 if persona == "expert" else 404)
        return
    assert response.status_code == 200
    assert ('id="train-form"' in response.content.decode()) is shown


def test_the_form_is_prefilled_with_the_defaults_and_offers_only_the_methods_with_rows(
    tiny, sft_version, personas, client_for
):
    form = client_for(personas["admin"]).get(version_url(sft_version)).context["train_form"]
    assert [value for value, _ in form.fields["method"].choices] == ["sft"]
    assert form.initial["lora_r"] == 8 and form.initial["learning_rate"] == 3e-3  # tiny sft
    assert form.initial["base_model"] == tiny.pk


def test_the_form_creates_a_queued_run_with_the_chosen_settings(
    tiny, sft_version, personas, client_for
):
    response = client_for(personas["admin"]).post(launch_url(sft_version), form_data(tiny))

    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{sft_version.project.slug}/runs/{run.pk}/"
    assert run.status == RunStatus.QUEUED and run.method == "sft" and run.created_via == "web"
    assert run.created_by == personas["admin"] and run.base_model == tiny
    assert run.config["lora"]["r"] == 4 and run.config["lora"]["alpha"] == 8
    assert run.config["learning_rate"] == 0.001 and run.config["max_steps"] == 3
    assert run.config["batch_size"] == 2 and run.config["num_epochs"] == 2.0


def test_a_bad_setting_shows_the_form_again_with_the_error_by_its_field(
    tiny, sft_version, personas, client_for
):
    response = client_for(personas["admin"]).post(
        launch_url(sft_version), form_data(tiny, lora_r="0")
    )

    assert response.status_code == 400
    form = response.context["train_form"]
    assert "lora_r" in form.errors and "positive integer" in form.errors["lora_r"][0]
    assert "must be a positive integer" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_a_method_the_version_has_no_rows_for_is_refused(tiny, sft_version, personas, client_for):
    response = client_for(personas["admin"]).post(
        launch_url(sft_version), form_data(tiny, method="dpo")
    )
    assert response.status_code == 400 and "method" in response.context["train_form"].errors
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("persona, code", [("manager", 403), ("expert", 403), ("outsider", 404)])
def test_only_admins_may_launch_a_run_from_the_page(
    tiny, sft_version, personas, client_for, persona, code
):
    response = client_for(personas[persona]).post(launch_url(sft_version), form_data(tiny))
    assert response.status_code == code
    assert not TrainingRun.objects.exists()


def test_anonymous_visitors_cannot_launch_a_run(tiny, sft_version, client):
    response = client.post(launch_url(sft_version), form_data(tiny))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not TrainingRun.objects.exists()


def test_launching_a_run_needs_the_csrf_token_and_a_post(tiny, sft_version, personas, client_for):
    strict = client_for(personas["admin"], enforce_csrf=True)
    assert strict.post(launch_url(sft_version), form_data(tiny)).status_code == 403
    assert client_for(personas["admin"]).get(launch_url(sft_version)).status_code == 405
    assert not TrainingRun.objects.exists()


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


def adapters_url(project):
    return f"/projects/{project.slug}/adapters/"


def test_the_adapters_page_shows_each_adapter_with_its_lineage(
    adapter, project, personas, experts, client_for
):
    response = client_for(personas["manager"]).get(adapters_url(project))

    assert response.status_code == 200
    page = response.content.decode()
    run, version = adapter.run, adapter.run.dataset_version
    assert f"/projects/{project.slug}/runs/{run.pk}/" in page
    assert f"/projects/{project.slug}/datasets/{version.pk}/" in page
    assert version.content_sha256[:12] in page and "on tiny" in page and "final loss" in page
    (row,) = response.context["adapters"]
    assert row["decisions"] == 6 and row["items"] == 6
    assert row["experts"] == [experts[0].username]
    assert experts[0].username in page and experts[1].username not in page
    assert f'href="{adapters_url(project)}"' in page and 'aria-current="page"' in page


@pytest.mark.parametrize(
    "persona, code", [("admin", 200), ("manager", 200), ("expert", 403), ("outsider", 404)]
)
def test_the_adapters_page_is_for_managers_and_admins(project, personas, client_for, persona, code):
    assert client_for(personas[persona]).get(adapters_url(project)).status_code == code


def test_anonymous_visitors_are_sent_to_log_in_from_the_adapters_page(project, client):
    response = client.get(adapters_url(project))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_adapters_page_refuses_posts(project, personas, client_for):
    assert client_for(personas["admin"]).post(adapters_url(project)).status_code == 405


def test_the_adapter_downloads_as_a_zip_of_its_folder(adapter, project, personas, client_for):
    url = f"/projects/{project.slug}/adapters/{adapter.pk}/download.zip"
    response = client_for(personas["manager"]).get(url)

    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert f"adapter-{adapter.pk}/adapter_model.safetensors" in names
    assert f"adapter-{adapter.pk}/manifest.json" in names
    assert client_for(personas["expert"]).get(url).status_code == 403
    assert client_for(personas["outsider"]).get(url).status_code == 404
    assert client_for(personas["admin"]).post(url).status_code == 405
    other = f"/projects/not-{project.slug}/adapters/{adapter.pk}/download.zip"
    assert client_for(personas["admin"]).get(other).status_code == 404


def test_experts_and_managers_do_not_see_the_adapters_link_unless_they_may_open_it(
    project, personas, client_for
):
    link = f'href="{adapters_url(project)}"'
    assert (
        link in client_for(personas["manager"]).get(f"/projects/{project.slug}/").content.decode()
    )
    expert_page = client_for(personas["expert"]).get(f"/projects/{project.slug}/queue/")
    assert link not in expert_page.content.decode()


def test_the_run_page_links_to_its_adapter_and_download(adapter, project, personas, client_for):
    response = client_for(personas["manager"]).get(
        f"/projects/{project.slug}/runs/{adapter.run_id}/"
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert f"/projects/{project.slug}/adapters/{adapter.pk}/download.zip" in page
