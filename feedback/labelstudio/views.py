"""The Label Studio page of a project (managers and admins; experts 403, outsiders 404):
the connection form with a test button, push and pull with live progress, a file import,
and the last reports."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from curation.models import Role
from curation.permissions import get_project_for_user
from feedback.labelstudio import selectors, services
from feedback.labelstudio.forms import ConnectionForm, FileImportForm
from feedback.models import LabelStudioJobKind


def _render(request, project, *, form=None, import_form=None, status=200):
    conn = selectors.connection_for(project=project)
    if conn is not None:
        conn.project = project
    initial = {}
    if conn is not None:
        initial = {
            "url": conn.url,
            "redline_url": conn.redline_url,
            "unknown_annotators": conn.unknown_annotators,
        }
    elif not (form and form.is_bound):
        initial = {"redline_url": request.build_absolute_uri("/").rstrip("/")}
    jobs = list(selectors.job_list(project=project)[: selectors.JOBS_SHOWN])
    context = {
        "project": project,
        "nav": "labelstudio",
        "conn": conn,
        "webhook_url": services.webhook_url(conn) if conn else "",
        "webhook_header": services.WEBHOOK_HEADER,
        "form": form or ConnectionForm(initial=initial),
        "import_form": import_form or FileImportForm(),
        "linked": selectors.linked_count(project=project),
        "jobs": jobs,
        "current": next((j for j in jobs if not j.finished), None) or (jobs[0] if jobs else None),
    }
    return render(request, "feedback/labelstudio/page.html", context, status=status)


@login_required
@require_GET
def labelstudio_page(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    return _render(request, project)


@login_required
@require_POST
def labelstudio_connection(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    if request.POST.get("action") == "delete":
        if services.connection_delete(project=project):
            messages.success(request, "Disconnected from Label Studio.")
        return redirect("feedback:labelstudio", slug=project.slug)
    form = ConnectionForm(request.POST)
    if form.is_valid():
        try:
            services.connection_set(project=project, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            for key, errors in exc.message_dict.items():
                form.add_error(key if key in form.fields else None, errors)
        else:
            messages.success(request, "Connection saved.")
            return redirect("feedback:labelstudio", slug=project.slug)
    return _render(request, project, form=form, status=400)


@login_required
@require_POST
def labelstudio_test(request, slug: str):
    """htmx: the result of asking Label Studio who the stored token belongs to."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    conn = selectors.connection_for(project=project)
    if conn is None:
        raise Http404("This project is not connected to Label Studio.")
    conn.project = project
    check = services.connection_test(conn=conn)
    return render(request, "feedback/labelstudio/partials/test.html", {"check": check})


@login_required
@require_POST
def labelstudio_job_start(request, slug: str, kind: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    if kind not in (LabelStudioJobKind.PUSH, LabelStudioJobKind.PULL):
        raise Http404("No such action.")
    try:
        services.job_submit(project=project, kind=kind, created_by=request.user)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
    return redirect("feedback:labelstudio", slug=project.slug)


@login_required
@require_POST
def labelstudio_import(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    form = FileImportForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            services.file_import_submit(
                project=project,
                created_by=request.user,
                filename=upload.name,
                chunks=upload.chunks(),
            )
        except ValidationError as exc:
            form.add_error("file", exc.messages)
        else:
            messages.success(request, "Export file queued for import.")
            return redirect("feedback:labelstudio", slug=project.slug)
    return _render(request, project, import_form=form, status=400)


@login_required
@require_GET
def labelstudio_job_progress(request, slug: str, job_id: int):
    """htmx partial polled every second while the job runs (the finished one stops it)."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    job = selectors.job_get(project=project, job_id=job_id)
    if job is None:
        raise Http404("No such job.")
    return render(
        request, "feedback/labelstudio/partials/job.html", {"project": project, "job": job}
    )
