"""The loop's rows in the Django admin: generation jobs (with their targets), evaluation
rounds, promotions and retraining cycles are history, shown read-only; retraining policies
are edited through ``policy_update``, with its checks."""

from __future__ import annotations

import pytest

from tests.training.loop_helpers import fake_adapter, round_with_answers
from training.models import Promotion, RetrainingCycle, RetrainingPolicy
from training.services.promotion import promotion_create

pytestmark = pytest.mark.django_db

HISTORY = ["generationjob", "evaluationround", "promotion", "retrainingcycle"]


@pytest.fixture
def admin_user(personas):
    return personas["admin"]


@pytest.fixture
def loop_rows(project, admin_user):
    adapter = fake_adapter(project)
    round_ = round_with_answers(adapter, [("Where is my parcel?", "On its way.", "No idea.")])
    promotion = promotion_create(
        project=project, adapter=adapter, user=admin_user, override=True, reason="A test."
    )
    cycle = RetrainingCycle.objects.create(project=project, trigger="decisions")
    return {
        "generationjob": round_.generation_job,
        "evaluationround": round_,
        "promotion": promotion,
        "retrainingcycle": cycle,
    }


@pytest.mark.parametrize("model", HISTORY)
def test_history_rows_are_listed_and_shown_but_never_added_changed_or_deleted(
    model, loop_rows, admin_user, client_for
):
    client = client_for(admin_user)
    row = loop_rows[model]
    listing = client.get(f"/admin/training/{model}/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert f"/admin/training/{model}/{row.pk}/change/" in html
    assert f"/admin/training/{model}/add/" not in html
    page = client.get(f"/admin/training/{model}/{row.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()  # a view, not a form
    assert client.get(f"/admin/training/{model}/add/").status_code == 403
    assert client.post(f"/admin/training/{model}/{row.pk}/change/", {}).status_code == 403
    assert (
        client.post(f"/admin/training/{model}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert type(row).objects.filter(pk=row.pk).exists()


def test_a_generation_job_shows_its_targets_inline(loop_rows, admin_user, client_for):
    job = loop_rows["generationjob"]
    page = client_for(admin_user).get(f"/admin/training/generationjob/{job.pk}/change/")
    html = page.content.decode()
    for target in job.targets.all():
        assert target.tag in html
    assert "targets-TOTAL_FORMS" in html  # the inline


def test_only_admins_reach_the_loop_admin(loop_rows, personas, client_for):
    page = client_for(personas["manager"]).get("/admin/training/promotion/")
    assert page.status_code == 302 and "/admin/login/" in page["Location"]
    assert Promotion.objects.count() == 1


def test_a_policy_is_edited_through_the_service_and_its_checks(project, admin_user, client_for):
    client = client_for(admin_user)
    add = "/admin/training/retrainingpolicy/add/"
    form = {
        "project": project.pk,
        "enabled": "on",
        "min_new_decisions": "",
        "require_approval": "on",
    }
    refused = client.post(add, form)
    assert refused.status_code == 200
    assert "An enabled policy needs a trigger" in refused.content.decode()
    assert not RetrainingPolicy.objects.exists()  # the check ran and changed nothing
    saved = client.post(add, {**form, "min_new_decisions": "25"})
    assert saved.status_code == 302, saved.content.decode()[-2000:]
    policy = RetrainingPolicy.objects.get()
    assert (policy.enabled, policy.min_new_decisions, policy.require_approval) == (True, 25, True)
    assert policy.updated_by == admin_user  # set by policy_update
    change = f"/admin/training/retrainingpolicy/{policy.pk}/change/"
    changed = client.post(change, {"enabled": "", "min_new_decisions": "", "on_drift": "on"})
    assert changed.status_code == 302
    policy.refresh_from_db()
    assert (policy.enabled, policy.min_new_decisions, policy.on_drift) == (False, None, True)
    assert policy.require_approval is False  # an unticked box
    assert (
        client.post(
            f"/admin/training/retrainingpolicy/{policy.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
