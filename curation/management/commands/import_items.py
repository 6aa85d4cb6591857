"""Import a JSONL, CSV or JSON-array file into a project, now, in this process."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from curation.models import ImportStatus, Project
from curation.services import imports as services


class Command(BaseCommand):
    help = (
        "Validate and import a file of items into a project (all or nothing; items whose "
        "external_id is already in the project are skipped). Exits non-zero on a bad file."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("path", help="a .jsonl, .csv or .json file")
        parser.add_argument("--format", choices=services.FORMATS, default="")
        parser.add_argument(
            "--user", help="the username recorded as the importer (default: the project's creator)"
        )

    def handle(self, *args, project, path, format, user, **options):
        project_obj = Project.objects.filter(slug=project).first()
        if project_obj is None:
            raise CommandError(f"No project with slug {project!r}.")
        created_by = project_obj.created_by
        if user:
            created_by = get_user_model().objects.filter(username=user).first()
            if created_by is None:
                raise CommandError(f"No user named {user!r}.")
        try:
            job = services.import_job_create(
                project=project_obj, created_by=created_by, filename=path, format=format, path=path
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        job = services.import_job_run(job_id=job.pk)
        if job.status != ImportStatus.SUCCEEDED:
            where = "item" if job.format == "json" else "line"
            for error in job.errors:
                field = f" {error['field']}:" if error["field"] else ""
                line = f"{where} {error['line']}" if error["line"] else "file"
                self.stderr.write(f"{path}: {line}:{field} {error['message']}")
            if job.error_count > len(job.errors):
                self.stderr.write(f"… and {job.error_count - len(job.errors):,} more problems.")
            raise CommandError(f"Import {job.pk} failed: {job.message}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Import {job.pk}: imported {job.imported_count:,} items, skipped "
                f"{job.skipped_count:,} already in {project_obj.slug}."
            )
        )
