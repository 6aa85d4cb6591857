"""Managers' quality pages: dashboard, adjudication, gold answers.

Every page and action needs the manager role in the project (admins pass): experts get 403,
outsiders 404. Thin: access check → form → one service → render or redirect. Names of experts
appear here (managers only); gold answers appear only here and on the item detail page, which
is managers-only too.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.models import Role
from curation.permissions import get_item_for_user, get_project_for_user
from curation.views.items import item_detail_render
from feedback import selectors, services
from feedback.forms_quality import AdjudicationForm, GoldForm
from feedback.models import ItemOutcome, Outcome
from feedback.monitoring import alerts_recent
from redline.lib.pagination import paginate_without_count

ADJUDICATION_PER_PAGE = 50
DASHBOARD_ALERTS = 5


def _managed_item(request, slug: str, item_id: int):
    """The item, if the user manages its project and it belongs to ``slug``."""
    item = get_item_for_user(request.user, item_id, role=Role.MANAGER)
    if item.project.slug != slug:  # an id from another project under this project's URL
        raise Http404("No such item.")
    return item


def _service_errors_to_form(form, exc: ValidationError) -> None:
    for key, errors in exc.message_dict.items():
        form.add_error(form.field_for_service_error(key), errors)


@login_required
@require_GET
def dashboard(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    context = {
        "project": project,
        "nav": "quality",
        "progress": selectors.project_progress(project=project),
        "agreement": selectors.agreement_report(project=project),
        "rates": selectors.decision_rates(project=project),
        "experts": selectors.expert_table(project=project),
        "alerts": list(alerts_recent(project=project)[:DASHBOARD_ALERTS]),
    }
    return render(request, "feedback/dashboard.html", context)


@login_required
@require_GET
def adjudication_list(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    page = paginate_without_count(
        selectors.adjudication_list(project=project),
        request.GET.get("page"),
        per_page=ADJUDICATION_PER_PAGE,
    )
    context = {"project": project, "nav": "adjudication", "page": page}
    return render(request, "feedback/adjudication_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def adjudicate(request, slug: str, item_id: int):
    """Side-by-side decisions and the manager's final decision. Works on items waiting for
    adjudication and, as an override, on items already decided."""
    item = _managed_item(request, slug, item_id)
    project = item.project
    candidates = list(item.candidates.order_by("position"))
    decisions = list(selectors.item_decisions(item=item))
    outcome = ItemOutcome.objects.select_related("decided_by").filter(item_id=item.pk).first()
    status = 200
    if request.method == "POST":
        form = AdjudicationForm(request.POST, candidates=candidates, decisions=decisions)
        if form.is_valid():
            try:
                result = services.item_adjudicate(
                    item=item, manager=request.user, **form.service_arguments()
                )
            except ValidationError as exc:
                _service_errors_to_form(form, exc)
            else:
                messages.success(
                    request,
                    f"Item {item.external_id} adjudicated: {result.get_outcome_display().lower()}.",
                )
                following = (
                    selectors.adjudication_list(project=project).exclude(item_id=item.pk).first()
                )
                if following is not None:
                    return redirect(
                        "feedback:adjudicate", slug=project.slug, item_id=following.item_id
                    )
                return redirect("feedback:adjudication_list", slug=project.slug)
        status = 400
    else:
        form = AdjudicationForm(
            initial=AdjudicationForm.initial_for(
                outcome=outcome, candidates=candidates, decisions=decisions
            ),
            candidates=candidates,
            decisions=decisions,
        )
    context = {
        "project": project,
        "nav": "adjudication",
        "item": item,
        "candidates": candidates,
        "decisions": decisions,
        "outcome": outcome,
        "overriding": outcome is not None and outcome.outcome != Outcome.NEEDS_ADJUDICATION,
        "complete": item.review_count >= project.overlap,
        "form": form,
    }
    return render(request, "feedback/adjudicate.html", context, status=status)


@login_required
@require_POST
def gold_set(request, slug: str, item_id: int):
    item = _managed_item(request, slug, item_id)
    candidates = list(item.candidates.order_by("position"))
    form = GoldForm(request.POST, candidates=candidates, label_schema=item.project.label_schema)
    if form.is_valid():
        try:
            services.gold_set(item=item, actor=request.user, **form.service_arguments())
        except ValidationError as exc:
            _service_errors_to_form(form, exc)
        else:
            messages.success(request, "Gold answer saved.")
            return redirect("curation:item_detail", slug=slug, item_id=item.pk)
    return item_detail_render(request, item, gold_form=form, status=400)


@login_required
@require_POST
def gold_clear(request, slug: str, item_id: int):
    item = _managed_item(request, slug, item_id)
    if services.gold_clear(item=item, actor=request.user):
        messages.success(request, "Gold answer cleared.")
    else:
        messages.info(request, "This item had no gold answer.")
    return redirect("curation:item_detail", slug=slug, item_id=item.pk)
