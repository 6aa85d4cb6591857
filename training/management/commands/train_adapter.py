"""Launch a LoRA training run on a built dataset version."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from training.models import BaseModel, DatasetVersion


class Command(BaseCommand):
    help = (
        "Train a LoRA adapter on a dataset version: queue it for a worker on the training "
        "queue (default), or with --now train in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", type=int, help="dataset version id")
        parser.add_argument("--base", default="tiny", help="base model name (default: tiny)")
        parser.add_argument("--method", default="sft", choices=["sft", "dpo"])
        parser.add_argument(
            "--config", default="{}", help="settings as JSON, e.g. '{\"max_steps\": 20}'"
        )
        parser.add_argument("--user", help="username recorded as the launcher")
        parser.add_argument("--now", action="store_true", help="train here instead of queueing")

    def handle(self, *args, dataset, base, method, config, user, now, **options):
        from training.services.runs import run_execute, training_run_create

        try:
            settings_ = json.loads(config)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc}") from None
        version = DatasetVersion.objects.filter(pk=dataset).first()
        if version is None:
            raise CommandError(f"no dataset version {dataset}")
        model = BaseModel.objects.filter(name=base).first()
        if model is None:
            names = ", ".join(BaseModel.objects.values_list("name", flat=True)) or "none"
            raise CommandError(
                f"no base model {base!r} (registered: {names}; run prepare_models for tiny)"
            )
        launcher = None
        if user:
            launcher = get_user_model().objects.filter(username=user).first()
            if launcher is None:
                raise CommandError(f"no user {user!r}")
        try:
            run = training_run_create(
                user=launcher,
                dataset_version=version,
                base_model=model,
                method=method,
                config=settings_,
                via="cli",
            )
        except ValidationError as exc:
            lines = [f"{k}: {m}" for k, ms in exc.message_dict.items() for m in ms]
            raise CommandError("\n".join(lines)) from None
        if not now:
            self.stdout.write(f"run {run.pk} queued on the training queue")
            return
        status = run_execute(run_id=run.pk)
        run.refresh_from_db()
        line = f"run {run.pk}: {status} at step {run.step}/{run.total_steps}, loss {run.loss}"
        if run.status != "succeeded":
            raise CommandError(f"{line}\n{run.error}")
        self.stdout.write(self.style.SUCCESS(line))
