"""HTML pages and htmx partials for projects. Thin: access check → service → template."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from curation import selectors
from curation.forms import MemberForm
from curation.models import Role
from curation.permissions import get_project_for_user
from curation.services import projects as services


@login_required
@require_GET
def project_list(request):
    projects = selectors.project_list_for_user(user=request.user)
    return render(request, "curation/project_list.html", {"projects": projects})


@login_required
@require_GET
def project_detail(request, slug: str):
    project = get_project_for_user(request.user, slug)
    context = {"project": project, "nav": "projects"}
    if project.user_role in (Role.MANAGER, "admin"):
        context["members"] = selectors.membership_list(project=project)
        context["member_form"] = MemberForm()
    return render(request, "curation/project_detail.html", context)


@login_required
@require_POST
def project_member_add(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    form = MemberForm(request.POST)
    message = None
    if form.is_valid():
        try:
            membership, created = services.membership_set(project=project, **form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            verb = "added as" if created else "is now"
            message = f"{membership.user.username} {verb} {membership.get_role_display().lower()}."
            form = MemberForm()
    if not request.htmx:  # plain form post (no JavaScript): back to the page with a message
        if message:
            messages.success(request, message)
        else:
            messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        return redirect("curation:project_detail", slug=project.slug)
    context = {
        "project": project,
        "members": selectors.membership_list(project=project),
        "member_form": form,
        "message": message,
    }
    return render(request, "curation/partials/members.html", context)
