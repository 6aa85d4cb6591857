# ruff: noqa: F811 (fixtures imported from test_runs are used as arguments)
"""The Django admin's "Train adapter…" action on dataset versions: one selected version, an
intermediate page with the launch form (prefilled with the defaults), the same service as
every other launch (created_via "admin"), errors on the form by field, staff only."""

from __future__ import annotations

import json

import pytest

from tests.factories import UserFactory
from tests.training.test_runs import sft_version, tiny, tiny_prepared  # noqa: F401 (fixtures)
from training.ml.config import defaults_for
from training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/training/datasetversion/"


def train_url(version):
    return f"{CHANGELIST}{version.pk}/train/"


def action(client, *versions, follow=False):
    return client.post(
        CHANGELIST,
        {"action": "train_adapter", "_selected_action": [str(v.pk) for v in versions]},
        follow=follow,
    )


def test_the_action_on_one_version_opens_the_train_page(tiny, sft_version, personas, client_for):
    response = action(client_for(personas["admin"]), sft_version)
    assert response.status_code == 302 and response["Location"] == train_url(sft_version)


def test_the_action_is_listed_on_the_changelist(tiny, sft_version, personas, client_for):
    page = client_for(personas["admin"]).get(CHANGELIST).content.decode()
    assert '<option value="train_adapter">Train adapter…</option>' in page


def test_the_action_refuses_more_than_one_version_with_a_clear_message(
    tiny, sft_version, project, personas, build, client_for
):
    other = build(project, personas["admin"], kinds=["sft"], eval_fraction=0.5, seed=7)
    assert other.pk != sft_version.pk

    response = action(client_for(personas["admin"]), sft_version, other, follow=True)

    assert response.status_code == 200
    page = response.content.decode()
    assert "works on one dataset version at a time: select exactly one (you selected 2)" in page
    assert not TrainingRun.objects.exists()


def test_the_train_page_is_prefilled_with_the_defaults_for_the_first_method_and_model(
    tiny, sft_version, personas, client_for
):
    response = client_for(personas["admin"]).get(train_url(sft_version))

    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["base_model"] == tiny.pk and form.initial["method"] == "sft"
    assert json.loads(form.initial["config"]) == defaults_for("sft", tiny.parameters).to_dict()
    assert [value for value, _ in form.fields["method"].choices] == ["sft"]
    page = response.content.decode()
    assert 'id="train-adapter-form"' in page and "&quot;learning_rate&quot;: 0.003" in page


def test_the_train_page_launches_a_run_through_the_service(tiny, sft_version, personas, client_for):
    config = defaults_for("sft", tiny.parameters).to_dict()
    config.update(max_steps=3, learning_rate=0.001)
    config["lora"]["r"] = 4

    response = client_for(personas["admin"]).post(
        train_url(sft_version),
        {"base_model": tiny.pk, "method": "sft", "config": json.dumps(config)},
    )

    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{sft_version.project.slug}/runs/{run.pk}/"
    assert run.status == RunStatus.QUEUED and run.created_via == "admin"
    assert run.created_by == personas["admin"] and run.dataset_version == sft_version
    assert run.config["max_steps"] == 3 and run.config["lora"]["r"] == 4
    assert run.config["learning_rate"] == 0.001


def test_keys_left_out_of_the_config_take_the_defaults(tiny, sft_version, personas, client_for):
    client_for(personas["admin"]).post(
        train_url(sft_version), {"base_model": tiny.pk, "method": "sft", "config": "{}"}
    )
    assert TrainingRun.objects.get().config == defaults_for("sft", tiny.parameters).to_dict()


@pytest.mark.parametrize(
    ("config", "field", "text"),
    [
        ('{"lora": {"r": 0}}', "config", "lora.r: must be a positive integer, got 0"),
        ('{"learning_rate": -1}', "config", "learning_rate: must be a number above 0"),
        ('{"epochs": 3}', "config", "epochs: unknown setting epochs"),
        (
            '{"lora": {"target_modules": ["c_attn"]}}',
            "config",
            "lora.target_modules: the model has no module named 'c_attn'",
        ),
        ('{"method": "dpo"}', "config", "method: The config says 'dpo', the run is 'sft'."),
        ('{"lora": ', "config", "Not valid JSON: Expecting value at line 1"),
        ("[1, 2]", "config", "Must be a JSON object ({…}), got list."),
    ],
)
def test_a_bad_config_shows_the_form_again_with_the_error_under_its_field(
    tiny, sft_version, personas, client_for, config, field, text
):
    response = client_for(personas["admin"]).post(
        train_url(sft_version), {"base_model": tiny.pk, "method": "sft", "config": config}
    )

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field] and text in errors[field][0], errors
    page = response.content.decode()
    assert 'id="config-errors"' in page
    assert not TrainingRun.objects.exists()


def test_a_method_the_version_has_no_rows_for_is_refused_under_method(
    tiny, sft_version, personas, client_for
):
    response = client_for(personas["admin"]).post(
        train_url(sft_version), {"base_model": tiny.pk, "method": "dpo", "config": "{}"}
    )
    assert response.status_code == 400 and "method" in response.context["form"].errors
    assert not TrainingRun.objects.exists()


def test_load_defaults_refills_the_config_for_the_chosen_model_without_launching(
    tiny, tiny_prepared, sft_version, personas, client_for
):
    from training.models import BaseModel

    unknown_size = BaseModel.objects.create(name="big-hub-model", reference="org/big-model")
    response = client_for(personas["admin"]).post(
        train_url(sft_version),
        {"base_model": unknown_size.pk, "method": "sft", "config": "{}", "_defaults": "1"},
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["base_model"] == unknown_size.pk
    assert json.loads(form.initial["config"]) == defaults_for("sft", None).to_dict()
    assert json.loads(form.initial["config"])["learning_rate"] == 1e-4  # large-model defaults
    assert not TrainingRun.objects.exists()


def test_a_version_with_nothing_to_train_sends_the_admin_back_with_a_message(
    tiny, sft_version, project, personas, client_for
):
    from training.services import dataset_version_request

    queued, _ = dataset_version_request(
        project=project, user=personas["admin"], params={"seed": 9}, enqueue=False
    )
    assert queued.status == "queued"
    response = client_for(personas["admin"]).get(train_url(queued), follow=True)
    assert response.redirect_chain[-1][0] == CHANGELIST
    assert f"Dataset version {queued.pk} has nothing to train on" in response.content.decode()


def test_without_a_base_model_the_admin_is_told_to_prepare_one(sft_version, personas, client_for):
    response = client_for(personas["admin"]).get(train_url(sft_version), follow=True)
    assert "No base model is registered" in response.content.decode()


def test_people_who_are_not_staff_are_sent_to_the_admin_login(
    tiny, sft_version, personas, client_for
):
    for persona in ("manager", "expert", "outsider"):
        client = client_for(personas[persona])
        for response in (
            client.get(train_url(sft_version)),
            client.post(train_url(sft_version), {"base_model": tiny.pk, "method": "sft"}),
            action(client, sft_version),
        ):
            assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not TrainingRun.objects.exists()


def test_staff_without_permission_on_dataset_versions_get_403(tiny, sft_version, client_for):
    staff = UserFactory(username="stan-staff", is_staff=True)
    client = client_for(staff)
    assert client.get(train_url(sft_version)).status_code == 403
    response = client.post(
        train_url(sft_version), {"base_model": tiny.pk, "method": "sft", "config": "{}"}
    )
    assert response.status_code == 403
    assert action(client, sft_version).status_code == 403
    assert not TrainingRun.objects.exists()


def test_the_train_page_needs_the_csrf_token(tiny, sft_version, personas, client_for):
    strict = client_for(personas["admin"], enforce_csrf=True)
    response = strict.post(
        train_url(sft_version), {"base_model": tiny.pk, "method": "sft", "config": "{}"}
    )
    assert response.status_code == 403
    assert not TrainingRun.objects.exists()


def test_an_unknown_version_is_404(tiny, personas, client_for):
    assert client_for(personas["admin"]).get(f"{CHANGELIST}999999/train/").status_code == 404
