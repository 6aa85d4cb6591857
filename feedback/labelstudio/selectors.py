"""Reads for the Label Studio interop."""

from __future__ import annotations

from django.db.models import QuerySet

from curation.models import Project
from feedback.models import LabelStudioConnection, LabelStudioJob, LabelStudioTask

JOBS_SHOWN = 10


def connection_for(*, project: Project) -> LabelStudioConnection | None:
    return LabelStudioConnection.objects.filter(project=project).first()


def job_list(*, project: Project) -> QuerySet[LabelStudioJob]:
    return LabelStudioJob.objects.filter(project=project).order_by("-created_at", "-id")


def job_get(*, project: Project, job_id) -> LabelStudioJob | None:
    try:
        pk = int(job_id)
    except (TypeError, ValueError):
        return None
    return LabelStudioJob.objects.filter(project=project, pk=pk).first()


def linked_count(*, project: Project) -> int:
    """Items of the project linked to a task of the connected server."""
    return LabelStudioTask.objects.filter(project=project, origin="server").count()
