"""HTML pages and htmx partials for imports. Thin: access check → service → template."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from curation import selectors
from curation.forms import ImportUploadForm
from curation.models import Role
from curation.permissions import get_import_job_for_user, get_project_for_user
from curation.services import imports as services


@login_required
@require_http_methods(["GET", "POST"])
def import_page(request, slug: str):
    """The project's import page: the upload form and the recent imports."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    form = ImportUploadForm()
    if request.method == "POST":
        form = ImportUploadForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = services.import_job_submit(
                    project=project,
                    created_by=request.user,
                    filename=upload.name,
                    format=form.cleaned_data["format"],
                    chunks=upload.chunks(),
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                return redirect("curation:import_detail", slug=project.slug, job_id=job.pk)
    context = {
        "project": project,
        "form": form,
        "jobs": selectors.import_job_list(project=project)[:20],
        "nav": "imports",
    }
    return render(request, "curation/import_page.html", context, status=400 if form.errors else 200)


def _job(request, slug: str, job_id: int):
    job = get_import_job_for_user(request.user, job_id, role=Role.MANAGER)
    if job.project.slug != slug:
        raise Http404("No such import job.")
    return job


@login_required
@require_GET
def import_detail(request, slug: str, job_id: int):
    job = _job(request, slug, job_id)
    return render(
        request,
        "curation/import_detail.html",
        {"project": job.project, "job": job, "nav": "imports"},
    )


@login_required
@require_GET
def import_progress(request, slug: str, job_id: int):
    """The htmx partial polled every second while the job runs; once it is finished the
    partial comes back without its trigger, so polling stops."""
    job = _job(request, slug, job_id)
    return render(
        request, "curation/partials/import_progress.html", {"project": job.project, "job": job}
    )
