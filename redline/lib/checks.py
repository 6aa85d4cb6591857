"""System checks for mistakes an operator can make in the environment."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.compatibility)
def check_storage_dir(app_configs, **kwargs):
    errors = []
    storage = settings.STORAGE_DIR
    try:
        storage.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        errors.append(
            Error(
                f"REDLINE_STORAGE_DIR={str(storage)!r} cannot be created: {exc.strerror}.",
                hint="Point REDLINE_STORAGE_DIR at a writable directory shared by web and workers.",
                id="redline.E001",
            )
        )
    else:
        if not os.access(storage, os.W_OK):
            errors.append(
                Error(
                    f"REDLINE_STORAGE_DIR={str(storage)!r} is not writable.",
                    id="redline.E001",
                )
            )
    return errors


@register(Tags.database, deploy=True)
def check_production_services(app_configs, **kwargs):
    """SQLite and the filesystem broker are for one-machine demos, not for production."""
    warnings = []
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        warnings.append(
            Warning(
                "DATABASE_URL is not set: Redline is running on SQLite.",
                hint="Set DATABASE_URL=postgres://user:password@host:5432/redline for production.",
                id="redline.W001",
            )
        )
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        warnings.append(
            Warning(
                "CELERY_BROKER_URL is not set: Celery uses the local filesystem broker.",
                hint="Set CELERY_BROKER_URL=redis://host:6379/0 for production.",
                id="redline.W002",
            )
        )
    return warnings
