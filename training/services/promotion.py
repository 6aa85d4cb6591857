"""Promotion: which model a project serves, who chose it, on what evidence, and how to go back.

The history is append-only (``Promotion`` rows); the newest row is the project's current
model. Promoting an adapter needs a passed evaluation round of that adapter, unless an admin
overrides with a reason (recorded). A rollback is one action: a new row restoring what an
earlier row promoted (``rollback_of``), so the history keeps every step. Admins only: the
caller checks the role (``require_admin``), the services check it again.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from curation.models import Project
from training.models import Adapter, EvaluationRound, Promotion, RoundStatus

REASON_MAX = 2000


def require_admin(user) -> None:
    if not (getattr(user, "is_authenticated", False) and user.is_staff):
        raise PermissionDenied("Only admins may promote models or roll back.")


def promotion_current(*, project: Project) -> Promotion | None:
    """The project's current model: its newest promotion (None before the first)."""
    return (
        Promotion.objects.filter(project=project)
        .select_related("adapter__run__base_model", "base_model", "promoted_by", "evaluation_round")
        .order_by("-created_at", "-id")
        .first()
    )


def promotion_history(*, project: Project):
    return (
        Promotion.objects.filter(project=project)
        .select_related(
            "adapter__run", "base_model", "promoted_by", "evaluation_round", "rollback_of"
        )
        .order_by("-created_at", "-id")
    )


def passed_round_for(*, adapter: Adapter) -> EvaluationRound | None:
    """The latest passed round of ``adapter``, if any."""
    return (
        EvaluationRound.objects.filter(subject=adapter, status=RoundStatus.COMPLETE, passed=True)
        .order_by("-decided_at", "-id")
        .first()
    )


def _reason(value) -> str:
    if not isinstance(value, str | None):
        raise ValidationError({"reason": ["The reason must be text."]})
    reason = (value or "").strip()
    if len(reason) > REASON_MAX:
        raise ValidationError({"reason": [f"At most {REASON_MAX:,} characters."]})
    return reason


def _lock_project(project: Project) -> None:
    # Promotions of one project are serialised, so "the newest row" is well defined and two
    # admins promoting at once both land in the history, one after the other.
    Project.objects.select_for_update(no_key=True).filter(pk=project.pk).first()


def promotion_create(
    *, project: Project, adapter: Adapter, user, override: bool = False, reason: str = ""
) -> Promotion:
    """Make ``adapter`` (on its run's base model) the project's current model.

    Needs a passed evaluation round of the adapter; without one, ``override=True`` and a
    reason (both recorded). Raises PermissionDenied for a non-admin, ValidationError keyed
    ``adapter`` / ``override`` / ``reason``.
    """
    require_admin(user)
    reason = _reason(reason)
    if adapter.run.dataset_version.project_id != project.pk:
        raise ValidationError({"adapter": ["That adapter was trained in another project."]})
    with transaction.atomic():
        _lock_project(project)
        current = promotion_current(project=project)
        if current is not None and current.adapter_id == adapter.pk:
            raise ValidationError({"adapter": [f"Adapter {adapter.pk} is the current model."]})
        passed = passed_round_for(adapter=adapter)
        if passed is None and not override:
            raise ValidationError(
                {
                    "override": [
                        f"Adapter {adapter.pk} has no passed evaluation round: evaluate it, or "
                        "confirm an override and give the reason."
                    ]
                }
            )
        if passed is None and not reason:
            raise ValidationError({"reason": ["An override needs a reason (it is recorded)."]})
        return Promotion.objects.create(
            project=project,
            adapter=adapter,
            base_model=adapter.run.base_model,
            evaluation_round=passed,
            override=passed is None,
            reason=reason,
            promoted_by=user,
        )


def promotion_rollback(*, project: Project, to: Promotion, user, reason: str = "") -> Promotion:
    """Restore what the earlier promotion ``to`` promoted, in one action: a new row with
    ``rollback_of=to`` (same adapter and base model, same round and override flag). Raises
    ValidationError when ``to`` is of another project or is the current promotion."""
    require_admin(user)
    reason = _reason(reason)
    if to.project_id != project.pk:
        raise ValidationError({"promotion": ["That promotion is of another project."]})
    with transaction.atomic():
        _lock_project(project)
        current = promotion_current(project=project)
        if current is not None and current.pk == to.pk:
            raise ValidationError({"promotion": ["That is the current model already."]})
        if (
            current is not None
            and current.adapter_id == to.adapter_id
            and current.base_model_id == to.base_model_id
        ):
            raise ValidationError({"promotion": ["That model is the current model already."]})
        return Promotion.objects.create(
            project=project,
            adapter=to.adapter,
            base_model=to.base_model,
            evaluation_round=to.evaluation_round,
            override=to.override,  # the restored model's evidence, as it was promoted
            reason=reason or f"Rollback to promotion {to.pk}.",
            rollback_of=to,
            promoted_by=user,
        )


# ---- What production reads --------------------------------------------------------------------


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_files(adapter: Adapter) -> list[dict]:
    """``[{name, size, sha256}]`` of the adapter's files (cached by size and mtime)."""
    root = Path(settings.STORAGE_DIR).resolve()
    folder = (root / adapter.path).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        return []
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        stat = path.stat()
        files.append(
            {
                "name": path.relative_to(folder).as_posix(),
                "size": stat.st_size,
                "sha256": _file_sha256(str(path), stat.st_size, stat.st_mtime_ns),
            }
        )
    return files
