"""Dataset pages: the project's versions with the build form (and its live count), a
version's page (progress, manifest, samples, downloads, comparison) and the downloads.

Managers and admins only: experts get 403, outsiders 404 (``get_project_for_user``,
``get_dataset_version_for_user``). Thin: parse → access check → one service or selector →
render. Files are streamed after the check; there is no public URL to them.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods

from curation.models import Role
from curation.permissions import get_project_for_user
from redline.lib.pagination import paginate_without_count
from training import selectors, services
from training.forms import CompareForm, DatasetBuildForm
from training.models import DatasetStatus
from training.permissions import get_dataset_version_for_user

VERSIONS_PER_PAGE = 20


def _build_form(project, data=None) -> DatasetBuildForm:
    return DatasetBuildForm(
        data,
        models=selectors.project_models(project=project),
        label_schema=project.label_schema,
    )


def _summary_for(project, form: DatasetBuildForm):
    """The live count for a bound form: (summary, None) or (None, error messages)."""
    if not form.is_valid():
        return None, [f"{e}" for errors in form.errors.values() for e in errors]
    try:
        params = services.params_clean(project=project, raw=form.params())
    except ValidationError as exc:
        return None, [m for messages_ in exc.message_dict.values() for m in messages_]
    return selectors.selection_summary(project=project, filters=params["filters"]), None


@login_required
@require_http_methods(["GET", "POST"])
def dataset_list(request, slug: str):
    """The project's dataset versions, newest first, and the build form."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    status = 200
    summary = errors = None
    if request.method == "POST":
        form = _build_form(project, request.POST)
        if form.is_valid():
            try:
                version, created = services.dataset_version_request(
                    project=project, user=request.user, params=form.params(), via="web"
                )
            except ValidationError as exc:
                form.add_service_errors(exc.message_dict)
            else:
                if created:
                    messages.success(request, f"Version {version.pk} is queued for building.")
                else:
                    messages.info(
                        request,
                        f"Nothing changed since version {version.pk} was asked for with these "
                        "settings: here it is.",
                    )
                return redirect("training:version_detail", slug=project.slug, version_id=version.pk)
        status = 400
    else:
        form = _build_form(project)
        defaults = services.params_clean(project=project, raw={})
        summary = selectors.selection_summary(project=project, filters=defaults["filters"])
    page = paginate_without_count(
        selectors.dataset_version_list(project=project),
        request.GET.get("page"),
        per_page=VERSIONS_PER_PAGE,
    )
    context = {
        "project": project,
        "nav": "datasets",
        "form": form,
        "summary": summary,
        "summary_errors": errors,
        "page": page,
    }
    return render(request, "training/dataset_list.html", context, status=status)


@login_required
@require_GET
def selection_count(request, slug: str):
    """The htmx partial behind the build form's live count: what the filters select."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    summary, errors = _summary_for(project, _build_form(project, request.GET))
    return render(
        request,
        "training/partials/selection_count.html",
        {"project": project, "summary": summary, "summary_errors": errors},
    )


@login_required
@require_GET
def version_detail(request, slug: str, version_id: int):
    version = get_dataset_version_for_user(request.user, version_id, slug=slug)
    return version_detail_render(request, version)


def version_detail_render(request, version, *, train_form=None, status: int = 200):
    """The version page; ``train_form``: a bound launch form with errors (views/runs.py)."""
    from training.views.runs import train_form_for

    others = (
        selectors.dataset_version_list(project=version.project)
        .filter(status=DatasetStatus.SUCCEEDED)
        .exclude(pk=version.pk)[:50]
    )
    context = {
        "project": version.project,
        "nav": "datasets",
        "version": version,
        "samples": selectors.version_sample(version) if version.status == "succeeded" else [],
        "manifest_json": json.dumps(version.manifest, indent=2, ensure_ascii=False),
        "compare_form": CompareForm(versions=others) if others else None,
        "train_form": train_form or train_form_for(version, version.project.user_role),
    }
    return render(request, "training/version_detail.html", context, status=status)


@login_required
@require_GET
def version_status(request, slug: str, version_id: int):
    """Polled every second while the version builds; once it has finished, htmx reloads
    the page (which then shows the files)."""
    version = get_dataset_version_for_user(request.user, version_id, slug=slug)
    response = render(
        request,
        "training/partials/version_status.html",
        {"project": version.project, "version": version},
    )
    if version.finished and request.htmx:
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_GET
def version_file(request, slug: str, version_id: int, name: str):
    version = get_dataset_version_for_user(request.user, version_id, slug=slug)
    return file_response(version, name)


def file_response(version, name: str) -> FileResponse:
    """Stream one file of a built version (404 for any name its manifest does not list)."""
    path = selectors.version_file_path(version, name)
    if path is None:
        raise Http404("No such file in this dataset version.")
    content_type = "application/json" if name.endswith(".json") else "application/x-ndjson"
    return FileResponse(
        open(path, "rb"),  # noqa: SIM115 (FileResponse closes it)
        as_attachment=True,
        filename=f"dataset-{version.pk}-{name}",
        content_type=content_type,
    )


@login_required
@require_GET
def version_archive(request, slug: str, version_id: int):
    """Every file of the version in one zip, compressed as it is sent."""
    version = get_dataset_version_for_user(request.user, version_id, slug=slug)
    if version.status != DatasetStatus.SUCCEEDED:
        raise Http404("This version has no files.")
    response = StreamingHttpResponse(
        selectors.version_archive(version), content_type="application/zip"
    )
    response["Content-Disposition"] = f'attachment; filename="dataset-{version.pk}.zip"'
    return response


@login_required
@require_GET
def version_compare(request, slug: str, version_id: int):
    """Rows added and removed per kind against another built version of the project. A
    full page, or the comparison alone for htmx (``Vary: HX-Request``)."""
    version = get_dataset_version_for_user(request.user, version_id, slug=slug)
    other = get_dataset_version_for_user(request.user, request.GET.get("other"), slug=slug)
    if version.status != DatasetStatus.SUCCEEDED or other.status != DatasetStatus.SUCCEEDED:
        raise Http404("Only built versions can be compared.")
    context = {
        "project": version.project,
        "nav": "datasets",
        "version": version,
        "other": other,
        "comparison": selectors.version_compare(version, other),
        "back": reverse("training:version_detail", args=[slug, version.pk]),
    }
    template = "training/partials/compare.html" if request.htmx else "training/version_compare.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response
