"""Training runs on the tiny model: end to end through run_execute (as the worker runs it),
twice-delivered messages, cancel, the stale-heartbeat sweep, config validation and access."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from training.models import Adapter, RunStatus, TrainingRun
from training.services import runs as services_runs
from training.services.runs import (
    base_models_register_builtin,
    run_execute,
    runs_fail_stale,
    training_run_cancel,
    training_run_create,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    from training.ml.models import prepare_tiny

    return prepare_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def tiny(settings, tiny_prepared):
    """The built-in tiny model in this test's STORAGE_DIR, registered as a BaseModel."""
    models = Path(settings.STORAGE_DIR) / "models"
    models.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_prepared, models / "tiny")
    (model,) = base_models_register_builtin(names=["tiny"])
    return model


@pytest.fixture
def sft_version(project, personas, experts, decide_item, build):
    """A built SFT-only dataset version of six accepted answers."""
    for n in range(6):
        decide_item(
            project,
            [(experts[0], "accept", {})],
            prompt=f"How do I reset password number {n}?",
            candidates=[(f"Open settings and choose reset, step {n}.", "m1")],
        )
    version = build(project, personas["admin"], kinds=["sft"], eval_fraction=0)
    assert version.status == "succeeded", version.error
    return version


def launch(version, model, user, method="sft", **config):
    return training_run_create(
        user=user, dataset_version=version, base_model=model, method=method, config=config
    )


def test_an_sft_run_trains_the_tiny_model_and_publishes_an_adapter(
    tiny, sft_version, personas, settings
):
    run = launch(sft_version, tiny, personas["admin"], max_steps=6)
    assert run.status == RunStatus.QUEUED and run.config["lora"]["r"] == 8  # tiny defaults

    assert run_execute(run_id=run.pk) == RunStatus.SUCCEEDED

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.log
    assert run.step == 6 and run.total_steps == 6 and run.progress_percent == 100
    assert run.loss is not None and run.heartbeat_at and run.finished_at
    steps = [h for h in run.metrics_history if h["event"] == "step"]
    assert [h["step"] for h in steps] == [1, 2, 3, 4, 5, 6]
    assert "phase: training" in run.log
    adapter = Adapter.objects.get(run=run)
    folder = Path(settings.STORAGE_DIR) / adapter.path
    assert adapter.path == f"adapters/{run.pk}"
    assert (folder / "adapter_model.safetensors").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["run_id"] == run.pk
    assert manifest["dataset_version"]["id"] == sft_version.pk
    assert adapter.manifest["status"] == "completed"


def test_a_twice_delivered_run_trains_once(tiny, sft_version, personas):
    run = launch(sft_version, tiny, personas["admin"], max_steps=2)
    assert run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    finished_at = TrainingRun.objects.get(pk=run.pk).finished_at

    assert run_execute(run_id=run.pk) is None

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.finished_at == finished_at
    assert Adapter.objects.filter(run=run).count() == 1


def test_cancelling_a_running_run_stops_it_at_the_next_step(
    tiny, sft_version, personas, monkeypatch, settings
):
    monkeypatch.setattr(services_runs, "CANCEL_CHECK_EVERY_S", 0)
    run = launch(sft_version, tiny, personas["admin"], max_steps=40)
    original = services_runs._Reporter.on_progress

    def cancel_after_two_steps(self, event):
        original(self, event)
        if event.get("event") == "step" and event["step"] == 2:
            training_run_cancel(run=TrainingRun.objects.get(pk=run.pk))

    monkeypatch.setattr(services_runs._Reporter, "on_progress", cancel_after_two_steps)

    assert run_execute(run_id=run.pk) == RunStatus.CANCELLED

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancel_requested
    assert run.step < 40
    assert not Adapter.objects.filter(run=run).exists()
    assert not (Path(settings.STORAGE_DIR) / "adapters" / str(run.pk)).exists()


def test_cancelling_a_queued_run_ends_it_at_once_and_the_worker_skips_it(
    tiny, sft_version, personas
):
    run = launch(sft_version, tiny, personas["admin"])
    run = training_run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    assert run_execute(run_id=run.pk) is None
    with pytest.raises(ValidationError) as exc:
        training_run_cancel(run=run)
    assert "status" in exc.value.message_dict


def test_a_run_whose_heartbeat_went_stale_is_failed_by_the_sweep(tiny, sft_version, personas):
    stale = launch(sft_version, tiny, personas["admin"])
    fresh = launch(sft_version, tiny, personas["admin"])
    old = timezone.now() - timedelta(minutes=30)
    TrainingRun.objects.filter(pk=stale.pk).update(status="running", heartbeat_at=old)
    TrainingRun.objects.filter(pk=fresh.pk).update(status="running", heartbeat_at=timezone.now())

    assert runs_fail_stale(older_than=timedelta(minutes=10)) == 1

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == RunStatus.FAILED and "No heartbeat for 10 minutes" in stale.error
    assert fresh.status == RunStatus.RUNNING


def test_a_run_that_raises_ends_failed_with_the_traceback_in_its_log(
    tiny, sft_version, personas, settings
):
    run = launch(sft_version, tiny, personas["admin"], max_steps=2)
    train_file = Path(settings.STORAGE_DIR) / sft_version.storage_path / "sft.train.jsonl"
    train_file.write_text('{"nothing": "useful"}\n')

    assert run_execute(run_id=run.pk) == RunStatus.FAILED

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "DatasetError" in run.error
    assert "Traceback (most recent call last)" in run.log


@pytest.mark.parametrize(
    ("config", "field", "text"),
    [
        ({"lora": {"r": 0}}, "config.lora.r", "lora.r: must be a positive integer"),
        ({"learning_rate": -0.001}, "config.learning_rate", "learning_rate: must be a number"),
        (
            {"lora": {"target_modules": ["c_attn"]}},
            "config.lora.target_modules",
            "no module named 'c_attn'",
        ),
        ({"epochs": 3}, "config.epochs", "unknown setting epochs"),
    ],
)
def test_invalid_settings_are_refused_with_the_field_named(
    tiny, sft_version, personas, config, field, text
):
    with pytest.raises(ValidationError) as exc:
        launch(sft_version, tiny, personas["admin"], **config)
    assert field in exc.value.message_dict
    assert text in exc.value.message_dict[field][0]
    assert not TrainingRun.objects.exists()


def test_dpo_on_a_dataset_without_preference_rows_is_refused(tiny, sft_version, personas):
    with pytest.raises(ValidationError) as exc:
        launch(sft_version, tiny, personas["admin"], method="dpo")
    assert "preference rows" in exc.value.message_dict["dataset"][0]


def test_registering_a_base_model_that_does_not_exist_says_why(tmp_path):
    from training.services.runs import base_model_register

    with pytest.raises(ValidationError) as exc:
        base_model_register(name="ghost", reference=str(tmp_path / "nope"))
    assert "does not exist" in exc.value.message_dict["reference"][0]
    with pytest.raises(ValidationError) as exc:
        base_model_register(name="bad", reference="my model")
    assert "neither an existing folder nor a valid hub id" in exc.value.message_dict["reference"][0]


# --------------------------------------------------------------------------------------------
# API


@pytest.mark.parametrize(
    ("persona", "code"), [("admin", 201), ("manager", 403), ("expert", 403), ("outsider", 404)]
)
def test_only_admins_launch_runs_through_the_api(
    tiny, sft_version, personas, api_for, persona, code
):
    response = api_for(personas[persona]).post(
        "/api/v1/training-runs/",
        {"dataset": sft_version.pk, "base_model": "tiny", "method": "sft",
         "config": {"max_steps": 3}},
        format="json",
    )  # fmt: skip
    assert response.status_code == code, response.content
    if code == 201:
        run = TrainingRun.objects.get()
        assert response.json()["status"] == "queued" and run.config["max_steps"] == 3
        assert run.created_via == "api"
    else:
        assert not TrainingRun.objects.exists()


def test_the_api_refuses_a_bad_config_naming_the_field(tiny, sft_version, personas, api_for):
    response = api_for(personas["admin"]).post(
        "/api/v1/training-runs/",
        {"dataset": sft_version.pk, "base_model": tiny.pk, "method": "sft",
         "config": {"lora": {"r": 0}}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "config.lora.r" in response.json()


def test_anonymous_callers_cannot_launch_runs(tiny, sft_version, client):
    response = client.post(
        "/api/v1/training-runs/",
        {"dataset": sft_version.pk, "base_model": "tiny", "method": "sft"},
        content_type="application/json",
    )
    assert response.status_code in (401, 403)


@pytest.mark.parametrize(
    ("persona", "read", "cancel"),
    [("admin", 200, 200), ("manager", 200, 403), ("expert", 403, 403), ("outsider", 404, 404)],
)
def test_runs_are_read_by_managers_and_cancelled_by_admins(
    tiny, sft_version, personas, api_for, persona, read, cancel
):
    run = launch(sft_version, tiny, personas["admin"])
    api = api_for(personas[persona])
    response = api.get(f"/api/v1/training-runs/{run.pk}/")
    assert response.status_code == read
    if read == 200:
        assert response.json()["total_steps"] == 0 and response.json()["base_model"] == "tiny"
    assert api.get(f"/api/v1/training-runs/{run.pk}/cancel/").status_code in (405, read)
    assert api.post(f"/api/v1/training-runs/{run.pk}/cancel/").status_code == cancel
    run.refresh_from_db()
    assert (run.status == RunStatus.CANCELLED) == (cancel == 200)


def test_an_adapter_is_read_through_the_api_with_its_run(tiny, sft_version, personas, api_for):
    run = launch(sft_version, tiny, personas["admin"], max_steps=2)
    run_execute(run_id=run.pk)
    adapter = Adapter.objects.get(run=run)
    body = api_for(personas["manager"]).get(f"/api/v1/adapters/{adapter.pk}/").json()
    assert body["run"] == run.pk and body["dataset"] == sft_version.pk
    assert body["manifest"]["base_model_name"] == "tiny"
    assert api_for(personas["expert"]).get(f"/api/v1/adapters/{adapter.pk}/").status_code == 403
    assert api_for(personas["outsider"]).get(f"/api/v1/adapters/{adapter.pk}/").status_code == 404
    run_body = api_for(personas["admin"]).get(f"/api/v1/training-runs/{run.pk}/").json()
    assert run_body["adapter"] == adapter.pk and run_body["status"] == "succeeded"


def test_base_models_are_listed_for_everyone_and_added_by_admins(
    tiny, tiny_prepared, personas, api_for
):
    listed = api_for(personas["expert"]).get("/api/v1/base-models/").json()
    assert [m["name"] for m in listed] == ["tiny"] and listed[0]["builtin"]
    payload = {"name": "my-tiny", "reference": str(tiny_prepared)}
    assert api_for(personas["manager"]).post("/api/v1/base-models/", payload).status_code == 403
    response = api_for(personas["admin"]).post("/api/v1/base-models/", payload)
    assert response.status_code == 201 and response.json()["parameters"] == 254_272
    response = api_for(personas["admin"]).post(
        "/api/v1/base-models/", {"name": "ghost", "reference": "/nowhere/at/all"}
    )
    assert response.status_code == 400
    assert "does not exist" in response.json()["reference"][0]


def test_the_train_adapter_command_trains_in_its_own_process_with_now(tiny, sft_version):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command(
        "train_adapter", str(sft_version.pk), "--base", "tiny", "--config",
        '{"max_steps": 2}', "--now", stdout=out,
    )  # fmt: skip
    assert "succeeded at step 2/2" in out.getvalue()
    assert TrainingRun.objects.get().created_via == "cli"
    with pytest.raises(CommandError, match="config.lora.r"):
        call_command("train_adapter", str(sft_version.pk), "--config", '{"lora": {"r": 0}}')


# --------------------------------------------------------------------------------------------
# pages


@pytest.mark.parametrize(
    ("persona", "code"), [("admin", 200), ("manager", 200), ("expert", 403), ("outsider", 404)]
)
def test_the_run_page_is_for_managers_and_admins(
    tiny, sft_version, personas, client_for, project, persona, code
):
    run = launch(sft_version, tiny, personas["admin"], max_steps=3)
    run_execute(run_id=run.pk)
    url = f"/projects/{project.slug}/runs/{run.pk}/"
    response = client_for(personas[persona]).get(url)
    assert response.status_code == code
    if code == 200:
        assert b"Succeeded" in response.content and b"<polyline" in response.content
        partial = client_for(personas[persona]).get(url, HTTP_HX_REQUEST="true")
        assert b"<h1>" not in partial.content and "HX-Request" in partial["Vary"]


def test_anonymous_visitors_are_sent_to_log_in(tiny, sft_version, personas, client, project):
    run = launch(sft_version, tiny, personas["admin"])
    response = client.get(f"/projects/{project.slug}/runs/{run.pk}/")
    assert response.status_code == 302 and "login" in response["Location"]


def test_admins_cancel_from_the_run_page_and_others_cannot(
    tiny, sft_version, personas, client_for, project
):
    run = launch(sft_version, tiny, personas["admin"])
    url = f"/projects/{project.slug}/runs/{run.pk}/cancel/"
    assert client_for(personas["manager"]).post(url).status_code == 403
    assert client_for(personas["outsider"]).post(url).status_code == 404
    assert client_for(personas["admin"]).get(url).status_code == 405
    assert client_for(personas["admin"], enforce_csrf=True).post(url).status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert client_for(personas["admin"]).post(url).status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
