"""The item browser for managers: a filtered, paginated list and one item's full detail.

Everything an item carries (prompt, messages, outputs, metadata, external ids) is untrusted
text from imports or production systems: templates autoescape it, wrap it in ``hx-disable``
regions, and never mark it safe.
"""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from curation import selectors
from curation.forms import ItemFilterForm
from curation.models import Item, Role
from curation.permissions import get_item_for_user, get_project_for_user
from feedback import selectors as feedback_selectors
from feedback.forms_quality import GoldForm
from feedback.models import GoldAnswer, ItemOutcome
from redline.lib.pagination import paginate_without_count

PER_PAGE = 50
AUDIT_LIMIT = 200


@login_required
@require_GET
def item_list(request, slug: str):
    """Filterable list, newest first, next/previous pages without a total count. Answers a
    full page, or the results fragment alone to htmx (hence ``Vary: HX-Request``)."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    form = ItemFilterForm(request.GET)
    page = None
    status = 200
    if form.is_valid():
        filters = selectors.ItemFilters(**{k: v or None for k, v in form.cleaned_data.items()})
        items = selectors.item_list(project=project, filters=filters)
        page = paginate_without_count(items, request.GET.get("page"), per_page=PER_PAGE)
    elif not request.htmx:  # htmx swaps only 2xx answers; the fragment carries the errors
        status = 400
    context = {
        "project": project,
        "nav": "items",
        "form": form,
        "page": page,
        "filtered": any(form.data.get(name) for name in form.fields),
    }
    template = "curation/partials/item_results.html" if request.htmx else "curation/item_list.html"
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
@require_GET
def item_detail(request, slug: str, item_id: int):
    item = get_item_for_user(request.user, item_id, role=Role.MANAGER)
    if item.project.slug != slug:  # an id from another project under this project's URL
        raise Http404("No such item.")
    return item_detail_render(request, item)


def item_detail_render(request, item, *, gold_form=None, status: int = 200):
    """The item detail page (managers only): the item, its assignments, and from
    ``feedback`` its outcome, every review side by side with expert names, the gold answer
    with its form, and the audit trail. ``gold_form`` carries a rejected gold submission.
    Queries stay bounded whatever the item holds: one each for candidates, assignments,
    outcome + gold, reviews (with experts), audit events (with actors)."""
    project = item.project
    candidates = list(item.candidates.order_by("position"))
    extra = (
        Item.objects.filter(pk=item.pk)
        .select_related("outcome__decided_by", "gold__created_by")
        .only(
            "pk",
            *(f"outcome__{f.name}" for f in ItemOutcome._meta.concrete_fields),
            "outcome__decided_by__username",
            *(f"gold__{f.name}" for f in GoldAnswer._meta.concrete_fields),
            "gold__created_by__username",
        )
        .first()
    )
    outcome = getattr(extra, "outcome", None) if extra else None
    gold = getattr(extra, "gold", None) if extra else None
    if gold_form is None:
        gold_form = GoldForm(
            initial=GoldForm.initial_for(gold),
            candidates=candidates,
            label_schema=project.label_schema,
        )
    audit = list(feedback_selectors.audit_for_item(item=item)[: AUDIT_LIMIT + 1])
    context = {
        "project": project,
        "nav": "items",
        "item": item,
        "candidates": candidates,
        "assignments": list(selectors.item_assignment_history(item=item)),
        "metadata_json": json.dumps(item.metadata, indent=2, ensure_ascii=False, sort_keys=True)
        if item.metadata
        else "",
        "now": timezone.now(),
        "outcome": outcome,
        "gold": gold,
        "gold_form": gold_form,
        "decisions": list(feedback_selectors.item_decisions(item=item)),
        "audit": audit[:AUDIT_LIMIT],
        "audit_truncated": len(audit) > AUDIT_LIMIT,
        "can_adjudicate": item.review_count >= project.overlap,
    }
    return render(request, "curation/item_detail.html", context, status=status)
