"""Review of the loop (issue 8): defects found after the first landing, each pinned by a test
that failed before its fix."""

from __future__ import annotations

import pytest

from curation.models import Candidate, Item
from tests.factories import item_add
from tests.training.loop_helpers import base_model, fake_adapter, round_with_answers
from training.models import (
    EvaluationItem,
    GenerationJob,
    GenerationOutput,
    GenerationPurpose,
    GenerationSource,
    GenerationTarget,
)
from training.services.evaluation import evaluation_round_generated
from training.services.generation import _land, generation_job_prompts, open_items_queryset

pytestmark = pytest.mark.django_db


# ---- Blind items stay blind: a candidates job on open items leaves them alone -----------------


def test_a_candidates_job_on_open_items_never_adds_a_named_answer_to_a_blind_item(
    project, compare_mode
):
    subject = fake_adapter(project)
    round_ = round_with_answers(subject, [("Blind prompt?", "subject says", "baseline says")])
    evaluation_round_generated(job=round_.generation_job)
    blind = EvaluationItem.objects.get(round=round_).item
    ordinary = item_add(project, prompt="Ordinary prompt?", candidates=[("an answer", "")])
    assert set(open_items_queryset(project).values_list("pk", flat=True)) == {ordinary.pk}

    base = base_model()
    job = GenerationJob.objects.create(
        project=project,
        purpose=GenerationPurpose.CANDIDATES,
        source=GenerationSource.OPEN_ITEMS,
        total=2,
    )
    target = GenerationTarget.objects.create(job=job, position=0, base_model=base, tag=base.name)
    specs = list(generation_job_prompts(job))
    assert [spec.item_id for spec in specs] == [ordinary.pk]
    GenerationOutput.objects.bulk_create(
        GenerationOutput(job=job, target=target, index=s.index, prompt=s.prompt, output="new")
        for s in specs
    )
    _land(job, [target], specs)
    assert [c.model for c in blind.candidates.order_by("position")] == ["", ""]
    assert Candidate.objects.filter(item=ordinary, model=base.name).count() == 1
    assert Item.objects.get(pk=blind.pk).candidates.count() == 2


# ---- API boundaries: digits that int() cannot read are refused, not a server error -----------


def test_a_baseline_of_unicode_digits_is_a_400_not_a_500(project, personas, api_for):
    subject = fake_adapter(project)
    response = api_for(personas["admin"]).post(
        f"/api/v1/projects/{project.slug}/evaluations/",
        {"adapter": subject.pk, "baseline": "\u00b2"},  # '²'.isdigit() is True; int('²') fails
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "baseline" in response.json()


def test_a_generation_target_of_unicode_digits_is_a_400_not_a_500(project, personas, api_for):
    response = api_for(personas["manager"]).post(
        f"/api/v1/projects/{project.slug}/generation-jobs/",
        {"targets": [{"base_model": "\u00b2"}], "source": "prompts", "prompts": ["Hi"]},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "targets[0].base_model" in response.json()


def test_a_rebase_onto_unicode_digits_is_a_400_not_a_500(project, personas, api_for):
    adapter = fake_adapter(project)
    response = api_for(personas["admin"]).post(
        f"/api/v1/adapters/{adapter.pk}/rebase/", {"base_model": "\u00b2"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "base_model" in response.json()


def test_the_evaluations_page_ignores_an_adapter_hint_of_unicode_digits(
    project, personas, client_for
):
    response = client_for(personas["admin"]).get(
        f"/projects/{project.slug}/evaluations/", {"adapter": "\u00b2"}
    )
    assert response.status_code == 200


# ---- Rollback to a model promoted on an override keeps saying so -----------------------------


def test_rolling_back_to_an_override_promotion_reports_the_override(project, personas, api_for):
    from training.models import EvaluationRound, RoundStatus
    from training.services.promotion import promotion_create, promotion_rollback

    admin = personas["admin"]
    first, second = fake_adapter(project), fake_adapter(project)
    unproven = promotion_create(
        project=project, adapter=first, user=admin, override=True, reason="Hotfix."
    )
    EvaluationRound.objects.create(
        project=project, subject=second, baseline_base_model=second.run.base_model,
        status=RoundStatus.COMPLETE, passed=True,
    )  # fmt: skip
    promotion_create(project=project, adapter=second, user=admin)
    back = promotion_rollback(project=project, to=unproven, user=admin)
    assert back.evaluation_round_id is None and back.override is True
    body = api_for(personas["expert"]).get(f"/api/v1/projects/{project.slug}/current-model/")
    assert body.status_code == 200
    current = body.json()
    assert current["adapter"]["id"] == first.pk and current["rollback_of"] == unproven.pk
    # no passed round behind the model served: production must not read it as evaluated
    assert current["evaluation_round"] is None and current["override"] is True
