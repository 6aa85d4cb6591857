"""Pages for a project's review settings (managers) and its guidelines (every member reads,
managers publish). Thin: access check → form → service → template."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from curation import selectors
from curation.forms import LABEL_SCHEMA_EXAMPLE, GuidelineForm, ProjectSettingsForm
from curation.models import ROLE_RANK, Role
from curation.permissions import get_project_for_user
from curation.services import settings as services
from redline.lib.markdown import render_markdown

# Service errors keyed by a model field; the form names one of them differently.
_FORM_FIELD = {"lease_seconds": "lease_minutes", "ingest_sample_fraction": "ingest_sample_percent"}


def _add_service_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        field = _FORM_FIELD.get(field, field)
        form.add_error(field if field in form.fields else None, errors)


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    if request.method == "POST":
        form = ProjectSettingsForm(request.POST)
        if form.is_valid():
            try:
                services.project_settings_update(project=project, **form.service_arguments())
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                messages.success(request, "Settings saved.")
                return redirect("curation:project_settings", slug=project.slug)
        status = 400
    else:
        form = ProjectSettingsForm(initial=ProjectSettingsForm.initial_for(project))
        status = 200
    context = {
        "project": project,
        "nav": "settings",
        "form": form,
        "schema_example": LABEL_SCHEMA_EXAMPLE,
        "has_reviews": services.project_has_reviews(project=project),
    }
    return render(request, "curation/project_settings.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def project_guidelines(request, slug: str):
    """The current guidelines rendered, the history of versions, and (for managers) a form
    that publishes a new version. ``?version=N`` shows an older one."""
    needed = Role.MANAGER if request.method == "POST" else Role.EXPERT
    project = get_project_for_user(request.user, slug, role=needed)
    can_publish = ROLE_RANK[project.user_role] >= ROLE_RANK[Role.MANAGER]
    current = selectors.guideline_current(project=project)
    status = 200
    form = None
    if request.method == "POST":
        form = GuidelineForm(request.POST)
        if form.is_valid():
            try:
                version, created = services.guideline_publish(
                    project=project, text=form.cleaned_data["text"], created_by=request.user
                )
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                if created:
                    messages.success(request, f"Published version {version.version}.")
                else:
                    messages.info(
                        request, f"No change: version {version.version} already has this text."
                    )
                return redirect("curation:project_guidelines", slug=project.slug)
        status = 400
    elif can_publish:
        form = GuidelineForm(initial={"text": current.text if current else ""})

    shown = current
    requested = request.GET.get("version")
    if requested is not None and request.method == "GET":
        if not requested.isdigit():
            raise Http404("No such guideline version.")
        shown = (
            selectors.guideline_list(project=project)
            .defer(None)
            .filter(version=int(requested))
            .first()
        )
        if shown is None:
            raise Http404("No such guideline version.")
    context = {
        "project": project,
        "nav": "guidelines",
        "current": current,
        "shown": shown,
        "shown_html": render_markdown(shown.text) if shown else "",
        "versions": selectors.guideline_list(project=project),
        "form": form,
        "can_publish": can_publish,
    }
    return render(request, "curation/project_guidelines.html", context, status=status)
