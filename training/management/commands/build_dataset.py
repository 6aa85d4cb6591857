"""Build a dataset version of a project, now, in this process (or queue it)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from curation.models import Project
from training.models import DatasetStatus
from training.services import dataset_version_build, dataset_version_request
from training.services.mapping import KINDS


def _label(value: str) -> tuple[str, str]:
    key, sep, answer = value.partition("=")
    if not sep or not key:
        raise ValueError(value)
    return key.strip(), answer.strip()


class Command(BaseCommand):
    help = (
        "Build an immutable dataset version (SFT, preference, KTO JSONL in trl's column names, "
        "with lineage and a manifest) from a project's final decisions. The same settings over "
        "the same decisions return the version already built."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--kinds", nargs="+", choices=KINDS, help="default: all three")
        parser.add_argument("--eval-fraction", type=float, help="0 to 0.5 (default 0.1)")
        parser.add_argument("--seed", type=int, help="default 0")
        parser.add_argument(
            "--outcomes", nargs="+", choices=["accepted", "rejected"], help="default: accepted"
        )
        parser.add_argument(
            "--sources", nargs="+", choices=["unanimous", "majority", "adjudicated"]
        )
        parser.add_argument("--min-agreement", type=float)
        parser.add_argument("--from", dest="date_from", help="decided on or after YYYY-MM-DD")
        parser.add_argument("--to", dest="date_to", help="decided on or before YYYY-MM-DD")
        parser.add_argument("--models", nargs="+", help="items with an output from these models")
        parser.add_argument(
            "--label", action="append", default=[], metavar="KEY=ANSWER", help="repeatable"
        )
        parser.add_argument("--gold", choices=["include", "exclude", "only"])
        parser.add_argument("--no-dedup", action="store_true", help="keep duplicate rows")
        parser.add_argument("--min-edit-chars", type=int)
        parser.add_argument("--system-prompt")
        parser.add_argument("--user", help="recorded as the requester")
        parser.add_argument(
            "--queue", action="store_true", help="queue the build for a worker instead"
        )

    def handle(self, *args, project, user, queue, **options):
        project_obj = Project.objects.filter(slug=project).first()
        if project_obj is None:
            raise CommandError(f"No project with slug {project!r}.")
        requester = None
        if user:
            requester = get_user_model().objects.filter(username=user).first()
            if requester is None:
                raise CommandError(f"No user named {user!r}.")
        try:
            labels = dict(_label(v) for v in options["label"])
        except ValueError as exc:
            raise CommandError(f"--label takes KEY=ANSWER, not {exc.args[0]!r}.") from None
        params = {
            "kinds": options["kinds"],
            "eval_fraction": options["eval_fraction"],
            "seed": options["seed"],
            "outcomes": options["outcomes"],
            "sources": options["sources"],
            "min_agreement": options["min_agreement"],
            "date_from": options["date_from"],
            "date_to": options["date_to"],
            "models": options["models"],
            "labels": labels,
            "gold": options["gold"],
            "dedup": False if options["no_dedup"] else None,
            "min_edit_chars": options["min_edit_chars"],
            "system_prompt": options["system_prompt"],
        }
        try:
            version, created = dataset_version_request(
                project=project_obj,
                user=requester,
                params={k: v for k, v in params.items() if v is not None},
                via="cli",
                enqueue=queue,
            )
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        if not created:
            self.stdout.write(f"Version {version.pk} was already asked for with these settings.")
        elif queue:
            self.stdout.write(f"Version {version.pk} is queued on the datasets queue.")
            return
        else:
            version = dataset_version_build(version_id=version.pk) or version
        version.refresh_from_db()
        if version.status == DatasetStatus.FAILED:
            raise CommandError(f"Version {version.pk} failed: {version.error}")
        if version.status != DatasetStatus.SUCCEEDED:
            self.stdout.write(f"Version {version.pk} is {version.get_status_display().lower()}.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Version {version.pk}: {version.rows_total:,} rows from "
                f"{version.items_total:,} decisions, sha256 {version.content_sha256}"
            )
        )
        for entry in version.files:
            self.stdout.write(
                f"  {entry['name']}: {entry['rows']:,} rows, sha256 {entry['sha256']}"
            )
