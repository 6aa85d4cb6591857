"""Promotion: the passed-round gate, a recorded override, rollback in one action, history, and
the current-model API production systems read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from tests.training.loop_helpers import fake_adapter
from training.models import EvaluationRound, Promotion, RoundStatus
from training.services.promotion import (
    promotion_create,
    promotion_current,
    promotion_history,
    promotion_rollback,
)

pytestmark = pytest.mark.django_db


def passed_round(adapter, *, passed=True) -> EvaluationRound:
    """A closed round of ``adapter`` (its verdict is what the gate reads)."""
    return EvaluationRound.objects.create(
        project=adapter.run.dataset_version.project,
        subject=adapter,
        baseline_base_model=adapter.run.base_model,
        status=RoundStatus.COMPLETE,
        passed=passed,
        wins=9,
        losses=1,
    )


@pytest.fixture
def adapters(project):
    return [fake_adapter(project) for _ in range(3)]


def test_promotion_needs_a_passed_round(project, personas, adapters):
    admin = personas["admin"]
    with pytest.raises(ValidationError) as exc:
        promotion_create(project=project, adapter=adapters[0], user=admin)
    assert "no passed evaluation round" in exc.value.message_dict["override"][0]
    passed_round(adapters[0], passed=False)
    with pytest.raises(ValidationError):
        promotion_create(project=project, adapter=adapters[0], user=admin)
    round_ = passed_round(adapters[0])
    promotion = promotion_create(project=project, adapter=adapters[0], user=admin)
    assert promotion.evaluation_round_id == round_.pk and promotion.override is False
    assert promotion.base_model_id == adapters[0].run.base_model_id
    assert promotion_current(project=project).pk == promotion.pk
    with pytest.raises(ValidationError, match="current model"):
        promotion_create(project=project, adapter=adapters[0], user=admin)


def test_an_override_needs_a_reason_and_is_recorded(project, personas, adapters):
    admin = personas["admin"]
    with pytest.raises(ValidationError) as exc:
        promotion_create(project=project, adapter=adapters[1], user=admin, override=True)
    assert "reason" in exc.value.message_dict
    promotion = promotion_create(
        project=project,
        adapter=adapters[1],
        user=admin,
        override=True,
        reason="Hotfix for the refund policy answers.",
    )
    assert promotion.override is True and promotion.evaluation_round is None
    assert promotion.reason == "Hotfix for the refund policy answers."
    assert promotion.promoted_by == admin


def test_only_admins_promote_or_roll_back(project, personas, adapters):
    passed_round(adapters[0])
    for persona in ("manager", "expert"):
        with pytest.raises(PermissionDenied):
            promotion_create(project=project, adapter=adapters[0], user=personas[persona])
    first = promotion_create(project=project, adapter=adapters[0], user=personas["admin"])
    with pytest.raises(PermissionDenied):
        promotion_rollback(project=project, to=first, user=personas["manager"])


def test_an_adapter_of_another_project_cannot_be_promoted(project, personas):
    from tests.factories import ProjectFactory

    other = fake_adapter(ProjectFactory())
    passed_round(other)
    with pytest.raises(ValidationError, match="another project"):
        promotion_create(project=project, adapter=other, user=personas["admin"])


def test_rollback_to_any_earlier_promotion_in_one_action(project, personas, adapters):
    admin = personas["admin"]
    for adapter in adapters:
        passed_round(adapter)
    first, second, third = (
        promotion_create(project=project, adapter=a, user=admin) for a in adapters
    )
    assert promotion_current(project=project).pk == third.pk
    back = promotion_rollback(project=project, to=first, user=admin, reason="Third regressed.")
    assert back.rollback_of_id == first.pk and back.adapter_id == adapters[0].pk
    assert back.evaluation_round_id == first.evaluation_round_id and back.reason
    assert promotion_current(project=project).pk == back.pk
    assert [p.pk for p in promotion_history(project=project)] == [
        back.pk, third.pk, second.pk, first.pk,
    ]  # fmt: skip
    with pytest.raises(ValidationError):  # the current model already
        promotion_rollback(project=project, to=first, user=admin)
    with pytest.raises(ValidationError):
        promotion_rollback(project=project, to=back, user=admin)
    again = promotion_rollback(project=project, to=second, user=admin)
    assert promotion_current(project=project).adapter_id == adapters[1].pk
    assert Promotion.objects.filter(project=project).count() == 5 and again.rollback_of == second


# ---- The current-model API --------------------------------------------------------------------


def url(project) -> str:
    return f"/api/v1/projects/{project.slug}/current-model/"


def test_current_model_answers_nulls_before_any_promotion(project, personas, api_for):
    response = api_for(personas["expert"]).get(url(project))
    assert response.status_code == 200
    body = response.json()
    assert body["promotion"] is None and body["adapter"] is None and body["base_model"] is None


def test_current_model_names_the_base_the_adapter_its_files_and_who_promoted_it(
    project, personas, adapters, api_for, settings
):
    round_ = passed_round(adapters[0])
    promotion = promotion_create(project=project, adapter=adapters[0], user=personas["admin"])
    for persona in ("expert", "manager", "admin"):
        response = api_for(personas[persona]).get(url(project))
        assert response.status_code == 200, persona
    body = response.json()
    base = adapters[0].run.base_model
    assert body["promotion"] == promotion.pk and body["evaluation_round"] == round_.pk
    assert body["base_model"] == {
        "name": base.name, "reference": base.reference, "revision": base.revision,
    }  # fmt: skip
    assert body["adapter"]["id"] == adapters[0].pk
    assert body["adapter"]["download_url"].endswith(f"/api/v1/adapters/{adapters[0].pk}/download/")
    weights = Path(settings.STORAGE_DIR) / adapters[0].path / "adapter_model.safetensors"
    files = {f["name"]: f for f in body["adapter"]["files"]}
    assert files["adapter_model.safetensors"]["sha256"] == (
        hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    assert body["promoted_by"] == "ada-admin" and body["override"] is False
    # after a rollback it names the restored model at once
    passed_round(adapters[1])
    promotion_create(project=project, adapter=adapters[1], user=personas["admin"])
    assert api_for(personas["expert"]).get(url(project)).json()["adapter"]["id"] == adapters[1].pk
    promotion_rollback(project=project, to=promotion, user=personas["admin"])
    body = api_for(personas["expert"]).get(url(project)).json()
    assert body["adapter"]["id"] == adapters[0].pk and body["rollback_of"] == promotion.pk


def test_current_model_is_404_to_outsiders_and_401_without_a_token(project, personas, api_for):
    from rest_framework.test import APIClient

    assert api_for(personas["outsider"]).get(url(project)).status_code == 404
    assert APIClient().get(url(project)).status_code in (401, 403)
    assert api_for(personas["admin"]).post(url(project)).status_code == 405


def test_the_adapter_download_api_streams_the_files_to_managers(
    project, personas, adapters, api_for
):
    import io
    import zipfile

    target = f"/api/v1/adapters/{adapters[0].pk}/download/"
    assert api_for(personas["outsider"]).get(target).status_code == 404
    assert api_for(personas["expert"]).get(target).status_code == 403
    response = api_for(personas["manager"]).get(target)
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert f"adapter-{adapters[0].pk}/adapter_model.safetensors" in archive.namelist()


def test_promotion_api_gate_and_override(project, personas, adapters, api_for):
    target = f"/api/v1/projects/{project.slug}/promotions/"
    admin = api_for(personas["admin"])
    refused = admin.post(target, {"adapter": adapters[0].pk}, format="json")
    assert refused.status_code == 400 and "override" in refused.json()
    assert (
        api_for(personas["manager"]).post(target, {"adapter": adapters[0].pk}, format="json")
    ).status_code == 403
    created = admin.post(
        target,
        {"adapter": adapters[0].pk, "override": True, "reason": "Urgent fix."},
        format="json",
    )
    assert created.status_code == 201 and created.json()["override"] is True
    listed = api_for(personas["manager"]).get(target)
    assert listed.status_code == 200 and [p["id"] for p in listed.json()] == [created.json()["id"]]
    assert api_for(personas["expert"]).get(target).status_code == 403
    assert api_for(personas["outsider"]).get(target).status_code == 404
    passed_round(adapters[1])
    second = admin.post(target, {"adapter": adapters[1].pk}, format="json").json()
    rollback = admin.post(
        f"/api/v1/projects/{project.slug}/promotions/{created.json()['id']}/rollback/",
        {"reason": "Back."},
        format="json",
    )
    assert rollback.status_code == 201 and rollback.json()["rollback_of"] == created.json()["id"]
    assert second["evaluation_round"] is not None
