"""Access helpers for training runs and adapters. A run belongs to its dataset version's
project: managers read it, admins (staff) launch and cancel; experts get 403, outsiders 404."""

from __future__ import annotations

from django.http import Http404

from curation.models import Role
from curation.permissions import require_role, user_role
from training.models import Adapter, TrainingRun


def get_run_for_user(user, run_id, *, role: str = Role.MANAGER) -> TrainingRun:
    try:
        pk = int(run_id)
    except (TypeError, ValueError):
        raise Http404("No such training run.") from None
    run = (
        TrainingRun.objects.select_related("dataset_version__project", "base_model", "created_by")
        .filter(pk=pk)
        .first()
    )
    if run is None:
        raise Http404("No such training run.")
    project_role = user_role(user, run.dataset_version.project)
    if project_role is None:
        raise Http404("No such training run.")
    require_role(project_role, role)
    run.dataset_version.project.user_role = project_role
    return run


def get_adapter_for_user(user, adapter_id, *, role: str = Role.MANAGER) -> Adapter:
    try:
        pk = int(adapter_id)
    except (TypeError, ValueError):
        raise Http404("No such adapter.") from None
    adapter = (
        Adapter.objects.select_related(
            "run__dataset_version__project", "run__base_model", "run__created_by"
        )
        .filter(pk=pk)
        .first()
    )
    if adapter is None:
        raise Http404("No such adapter.")
    project_role = user_role(user, adapter.run.dataset_version.project)
    if project_role is None:
        raise Http404("No such adapter.")
    require_role(project_role, role)
    return adapter
