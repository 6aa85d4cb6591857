"""The expert's queue page: where they stand in a project, and the Start button."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from curation import selectors
from curation.permissions import get_item_for_user, get_project_for_user
from curation.services.queue import queue_claim_next, queue_lease_release


@login_required
@require_GET
def queue_page(request, slug: str):
    project = get_project_for_user(request.user, slug)
    context = {
        "project": project,
        "nav": "queue",
        "counts": selectors.queue_counts(project=project, expert=request.user),
        "current": selectors.queue_current_assignment(project=project, expert=request.user),
    }
    return render(request, "curation/queue.html", context)


@login_required
@require_POST
def queue_start(request, slug: str):
    project = get_project_for_user(request.user, slug)
    if queue_claim_next(project=project, expert=request.user) is None:
        messages.info(request, "Nothing is left for you in this project. Thank you!")
        return redirect("curation:queue", slug=project.slug)
    return redirect("feedback:review", slug=project.slug)


@login_required
@require_POST
def queue_release(request, slug: str):
    project = get_project_for_user(request.user, slug)
    item = get_item_for_user(request.user, request.POST.get("item"))
    if item.project_id != project.pk:
        messages.error(request, "That item is not in this project.")
    elif queue_lease_release(item=item, expert=request.user):
        messages.success(request, "The item went back to the queue.")
    return redirect("curation:queue", slug=project.slug)
