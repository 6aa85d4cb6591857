"""The loop's pages and API by persona (expert 403, outsider 404, manager reads, admin
writes), wrong methods, CSRF, the htmx partial, the forms, and the OpenAPI schema."""

from __future__ import annotations

import pytest

from tests.training.loop_helpers import fake_adapter, round_with_answers, tiny_model
from training.models import CycleStatus, EvaluationRound, Promotion, RetrainingCycle
from training.services.evaluation import evaluation_round_generated

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(project, compare_mode):
    """A round being judged, a promotion and a cycle awaiting approval."""
    adapter = fake_adapter(project)
    round_ = round_with_answers(adapter, [("Q?", "Yes.", "No.")], pass_rule={"min_judged": 1})
    evaluation_round_generated(job=round_.generation_job)
    promotion = Promotion.objects.create(
        project=project, adapter=adapter, base_model=adapter.run.base_model, override=True,
        reason="<script>alert(1)</script>",
    )  # fmt: skip
    cycle = RetrainingCycle.objects.create(
        project=project, trigger="drift", status=CycleStatus.AWAITING_APPROVAL, step="training"
    )
    return {"adapter": adapter, "round": round_, "promotion": promotion, "cycle": cycle}


def pages(project, world) -> list[str]:
    base = f"/projects/{project.slug}"
    return [
        f"{base}/evaluations/",
        f"{base}/evaluations/{world['round'].pk}/",
        f"{base}/models/",
        f"{base}/retraining/",
    ]


def test_pages_by_persona(project, personas, world, client_for, client):
    for url in pages(project, world):
        assert client_for(personas["expert"]).get(url).status_code == 403, url
        assert client_for(personas["outsider"]).get(url).status_code == 404, url
        assert client.get(url).status_code == 302, url  # to the login page
        for persona in ("manager", "admin"):
            response = client_for(personas[persona]).get(url)
            assert response.status_code == 200, (url, persona)
            html = response.content.decode()
            assert "<script>alert(1)</script>" not in html  # escaped everywhere


def test_managers_read_without_write_forms_and_admins_get_them(
    project, personas, world, client_for
):
    base = f"/projects/{project.slug}"
    manager = client_for(personas["manager"])
    admin = client_for(personas["admin"])
    assert 'id="evaluate-form"' not in manager.get(f"{base}/evaluations/").content.decode()
    assert 'id="evaluate-form"' in admin.get(f"{base}/evaluations/").content.decode()
    assert 'id="promote-form"' not in manager.get(f"{base}/models/").content.decode()
    models = admin.get(f"{base}/models/").content.decode()
    assert 'id="promote-form"' in models and "I confirm promoting without" in models
    assert 'id="policy-form"' not in manager.get(f"{base}/retraining/").content.decode()
    retraining = admin.get(f"{base}/retraining/").content.decode()
    assert 'id="policy-form"' in retraining and "Approve training" in retraining
    # the nav links, for managers
    nav = manager.get(f"{base}/models/").content.decode()
    assert f'href="{base}/evaluations/"' in nav and f'href="{base}/models/"' in nav
    # the adapters list links to the evaluate form
    adapters = manager.get(f"{base}/adapters/").content.decode()
    assert f"{base}/evaluations/?adapter={world['adapter'].pk}" in adapters


def test_writes_by_persona_wrong_method_and_csrf(project, personas, world, client_for):
    base = f"/projects/{project.slug}"
    writes = {
        f"{base}/evaluations/": "admin",
        f"{base}/models/promote/": "admin",
        f"{base}/models/{world['promotion'].pk}/rollback/": "admin",
        f"{base}/retraining/policy/": "admin",
        f"{base}/retraining/cycles/{world['cycle'].pk}/approve/": "admin",
        f"{base}/retraining/cycles/{world['cycle'].pk}/cancel/": "admin",
        f"{base}/evaluations/{world['round'].pk}/close/": "manager",
    }
    for url, needs in writes.items():
        assert client_for(personas["expert"]).post(url).status_code == 403, url
        assert client_for(personas["outsider"]).post(url).status_code == 404, url
        if needs == "admin":
            assert client_for(personas["manager"]).post(url).status_code == 403, url
        if not url.endswith("/evaluations/"):
            assert client_for(personas["admin"]).get(url).status_code == 405, url
        strict = client_for(personas["admin"], enforce_csrf=True)
        assert strict.post(url).status_code == 403, url  # no CSRF token


def test_the_results_partial_polls_while_judging(project, personas, world, client_for):
    url = f"/projects/{project.slug}/evaluations/{world['round'].pk}/"
    response = client_for(personas["manager"]).get(url, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'hx-trigger="every 3s"' in html and "Close round now" in html
    assert "HX-Request" in response["Vary"]


def test_the_policy_form_saves_and_reports_errors(project, personas, client_for):
    admin = client_for(personas["admin"])
    url = f"/projects/{project.slug}/retraining/policy/"
    bad = admin.post(url, {"enabled": "on"})
    assert bad.status_code == 400 and "needs a trigger" in bad.content.decode()
    ok = admin.post(url, {"enabled": "on", "min_new_decisions": "50", "require_approval": "on"})
    assert ok.status_code == 302
    policy = project.retraining_policy
    assert policy.enabled and policy.min_new_decisions == 50 and policy.require_approval


def test_the_promote_form_needs_the_confirmation_and_a_reason(project, personas, world, client_for):
    admin = client_for(personas["admin"])
    url = f"/projects/{project.slug}/models/promote/"
    other = fake_adapter(project)
    refused = admin.post(url, {"adapter": other.pk})
    assert refused.status_code == 400 and "no passed evaluation round" in refused.content.decode()
    no_reason = admin.post(url, {"adapter": other.pk, "override": "on"})
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.content.decode()
    ok = admin.post(url, {"adapter": other.pk, "override": "on", "reason": "Customer escalation."})
    assert ok.status_code == 302
    latest = Promotion.objects.filter(project=project).first()
    assert latest.adapter == other and latest.override and latest.reason == "Customer escalation."
    rollback = admin.post(
        f"/projects/{project.slug}/models/{world['promotion'].pk}/rollback/", {"reason": "Back"}
    )
    assert rollback.status_code == 302
    assert Promotion.objects.filter(project=project).first().rollback_of == world["promotion"]


def test_an_admin_starts_a_round_from_the_form(
    project, personas, client_for, tmp_path_factory, settings
):
    tiny = tiny_model(tmp_path_factory)
    adapter = fake_adapter(project, model=tiny)
    version = adapter.run.dataset_version
    version.storage_path = f"datasets/{version.pk}"
    version.save()
    folder = settings.STORAGE_DIR / version.storage_path
    folder.mkdir(parents=True)
    (folder / "sft.eval.jsonl").write_text('{"prompt": "Q?", "completion": "A"}\n')
    admin = client_for(personas["admin"])
    form = admin.get(f"/projects/{project.slug}/evaluations/?adapter={adapter.pk}")
    assert f'<option value="{adapter.pk}" selected>' in form.content.decode()
    response = admin.post(
        f"/projects/{project.slug}/evaluations/",
        {"adapter": adapter.pk, "baseline": "base", "threshold": "0.5", "min_judged": "3"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    round_ = EvaluationRound.objects.get(subject=adapter)
    assert response.url == f"/projects/{project.slug}/evaluations/{round_.pk}/"
    assert round_.pass_rule["min_judged"] == 3 and round_.created_by == personas["admin"]
    promoted = admin.post(
        f"/projects/{project.slug}/evaluations/",
        {"adapter": adapter.pk, "baseline": "promoted", "threshold": "0.5", "min_judged": "3"},
    )
    assert promoted.status_code == 400 and "Nothing is promoted" in promoted.content.decode()


# ---- API --------------------------------------------------------------------------------------


def test_api_by_persona(project, personas, world, api_for):
    slug = project.slug
    reads = [
        f"/api/v1/projects/{slug}/evaluations/",
        f"/api/v1/evaluations/{world['round'].pk}/",
        f"/api/v1/projects/{slug}/promotions/",
        f"/api/v1/projects/{slug}/retraining-policy/",
        f"/api/v1/projects/{slug}/retraining-cycles/",
    ]
    for url in reads:
        assert api_for(personas["expert"]).get(url).status_code == 403, url
        assert api_for(personas["outsider"]).get(url).status_code == 404, url
        assert api_for(personas["manager"]).get(url).status_code == 200, url
    writes = [
        ("post", f"/api/v1/projects/{slug}/evaluations/", {"adapter": world["adapter"].pk}),
        ("put", f"/api/v1/projects/{slug}/retraining-policy/", {"enabled": False}),
        ("post", f"/api/v1/projects/{slug}/retraining-cycles/{world['cycle'].pk}/approve/", {}),
        ("post", f"/api/v1/projects/{slug}/retraining-cycles/{world['cycle'].pk}/cancel/", {}),
        (
            "post",
            f"/api/v1/projects/{slug}/promotions/{world['promotion'].pk}/rollback/",
            {},
        ),
    ]
    for method, url, data in writes:
        for persona, code in (("expert", 403), ("outsider", 404), ("manager", 403)):
            response = getattr(api_for(personas[persona]), method)(url, data, format="json")
            assert response.status_code == code, (url, persona, response.content)
    detail = api_for(personas["manager"]).get(f"/api/v1/evaluations/{world['round'].pk}/").json()
    assert detail["status"] == "judging" and detail["report"]["pending"] == 1
    assert detail["pass_rule"]["min_judged"] == 1 and detail["items"] == 1
    policy = api_for(personas["admin"]).put(
        f"/api/v1/projects/{slug}/retraining-policy/",
        {"enabled": True, "min_new_decisions": 20, "on_drift": True, "require_approval": False},
        format="json",
    )
    assert policy.status_code == 200 and policy.json()["min_new_decisions"] == 20
    cancelled = api_for(personas["admin"]).post(
        f"/api/v1/projects/{slug}/retraining-cycles/{world['cycle'].pk}/cancel/"
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    closed = api_for(personas["manager"]).post(f"/api/v1/evaluations/{world['round'].pk}/close/")
    assert closed.status_code == 200 and closed.json()["status"] == "complete"
    again = api_for(personas["manager"]).post(f"/api/v1/evaluations/{world['round'].pk}/close/")
    assert again.status_code == 400 and "not being judged" in again.content.decode()


def test_the_openapi_schema_describes_the_loop(client):
    schema = client.get("/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in (
        "/api/v1/projects/{slug}/evaluations/",
        "/api/v1/evaluations/{round_id}/",
        "/api/v1/evaluations/{round_id}/close/",
        "/api/v1/projects/{slug}/promotions/",
        "/api/v1/projects/{slug}/promotions/{promotion_id}/rollback/",
        "/api/v1/projects/{slug}/current-model/",
        "/api/v1/adapters/{adapter_id}/download/",
        "/api/v1/projects/{slug}/retraining-policy/",
        "/api/v1/projects/{slug}/retraining-cycles/",
    ):
        assert path in text, path


def test_list_pages_take_a_fixed_number_of_queries(
    project, personas, world, client_for, django_assert_max_num_queries
):
    for _ in range(4):
        adapter = fake_adapter(project)
        round_with_answers(adapter, [("Q?", "Yes.", "No.")])
        Promotion.objects.create(
            project=project, adapter=adapter, base_model=adapter.run.base_model, override=True
        )
        RetrainingCycle.objects.create(
            project=project, trigger="decisions", status=CycleStatus.FAILED, error="x"
        )
    manager = client_for(personas["manager"])
    base = f"/projects/{project.slug}"
    for url in (f"{base}/evaluations/", f"{base}/models/", f"{base}/retraining/"):
        manager.get(url)  # warm the session and caches
        with django_assert_max_num_queries(16):
            assert manager.get(url).status_code == 200
