"""Import a Label Studio JSON export (tasks with annotations) into a project, now, in this
process: items for the tasks Redline did not push, reviews for the annotations."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from curation.models import Project
from feedback.labelstudio import services
from feedback.models import LabelStudioJobStatus


class Command(BaseCommand):
    help = (
        "Import a Label Studio JSON export into a project: tasks become items (unless Redline "
        "pushed them), annotations become reviews, through the same mapping as a pull. Per-task "
        "problems are listed; exits non-zero when the file itself cannot be read."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("path", help="a Label Studio JSON export (.json)")
        parser.add_argument(
            "--user", help="the username recorded as the importer (default: the project's creator)"
        )

    def handle(self, *args, project, path, user, **options):
        project_obj = Project.objects.filter(slug=project).first()
        if project_obj is None:
            raise CommandError(f"No project with slug {project!r}.")
        created_by = project_obj.created_by
        if user:
            created_by = get_user_model().objects.filter(username=user).first()
            if created_by is None:
                raise CommandError(f"No user named {user!r}.")
        file = Path(path)
        if not file.is_file():
            raise CommandError(f"No such file: {path}.")

        def chunks():
            with open(file, "rb") as f:
                while block := f.read(1024 * 1024):
                    yield block

        try:
            job = services.file_import_submit(
                project=project_obj,
                created_by=created_by,
                filename=file.name,
                chunks=chunks(),
                run_now=True,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        for error in job.errors:
            where = f"task {error['task']}" if error.get("task") is not None else "file"
            if error.get("annotation") is not None:
                where += f", annotation {error['annotation']}"
            self.stderr.write(f"{path}: {where}: {error['message']}")
        if job.error_count > len(job.errors):
            self.stderr.write(f"… and {job.error_count - len(job.errors):,} more problems.")
        for unknown in job.unknown_annotators:
            self.stderr.write(f"Annotator {unknown['email']}: {unknown['action']}.")
        if job.status != LabelStudioJobStatus.SUCCEEDED:
            raise CommandError(f"Label Studio import {job.pk} failed: {job.message}")
        self.stdout.write(self.style.SUCCESS(f"Label Studio import {job.pk}: {job.message}"))
