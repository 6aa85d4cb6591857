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
from curation.models import Role
from curation.permissions import get_item_for_user, get_project_for_user
from redline.lib.pagination import paginate_without_count

PER_PAGE = 50


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
    context = {
        "project": item.project,
        "nav": "items",
        "item": item,
        "candidates": list(item.candidates.order_by("position")),
        "assignments": list(selectors.item_assignment_history(item=item)),
        "metadata_json": json.dumps(item.metadata, indent=2, ensure_ascii=False, sort_keys=True)
        if item.metadata
        else "",
        "now": timezone.now(),
    }
    return render(request, "curation/item_detail.html", context)
