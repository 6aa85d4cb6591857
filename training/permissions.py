"""Access helpers for training objects: every dataset version, run and adapter id from a
request goes through here. Dataset versions belong to their project's managers (and admins): outsiders
get 404, experts 403, as for every project object."""

from __future__ import annotations

from django.http import Http404

from curation.models import Role
from curation.permissions import require_role, user_role
from training.models import (
    Adapter,
    DatasetVersion,
    EvaluationRound,
    GenerationJob,
    Promotion,
    RetrainingCycle,
    TrainingRun,
)


def get_dataset_version_for_user(
    user, version_id, *, role: str = Role.MANAGER, slug: str | None = None
) -> DatasetVersion:
    """The version as ``user`` may see it, with ``project.user_role`` set. ``slug``: the
    project the URL names; a version of another project under it is 404."""
    try:
        pk = int(version_id)
    except (TypeError, ValueError):
        raise Http404("No such dataset version.") from None
    version = DatasetVersion.objects.select_related("project", "created_by").filter(pk=pk).first()
    if version is None or (slug is not None and version.project.slug != slug):
        raise Http404("No such dataset version.")
    project_role = user_role(user, version.project)
    if project_role is None:
        raise Http404("No such dataset version.")
    require_role(project_role, role)
    version.project.user_role = project_role
    return version


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


# The loop's objects (evaluation rounds, promotions, retraining cycles) are read by the
# project's managers (and admins); experts never see them: a round's page names which answer
# was whose.


def _scoped(model, what: str, user, pk, *, role: str, slug: str | None, related=()):
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404(f"No such {what}.") from None
    obj = model.objects.select_related("project", *related).filter(pk=pk).first()
    if obj is None or (slug is not None and obj.project.slug != slug):
        raise Http404(f"No such {what}.")
    project_role = user_role(user, obj.project)
    if project_role is None:
        raise Http404(f"No such {what}.")
    require_role(project_role, role)
    obj.project.user_role = project_role
    return obj


def get_round_for_user(
    user, round_id, *, role: str = Role.MANAGER, slug: str | None = None
) -> EvaluationRound:
    return _scoped(
        EvaluationRound,
        "evaluation round",
        user,
        round_id,
        role=role,
        slug=slug,
        related=(
            "subject__run__base_model",
            "baseline_adapter__run",
            "baseline_base_model",
            "dataset_version",
            "generation_job",
            "created_by",
        ),
    )


def get_promotion_for_user(
    user, promotion_id, *, role: str = Role.MANAGER, slug: str | None = None
) -> Promotion:
    return _scoped(
        Promotion,
        "promotion",
        user,
        promotion_id,
        role=role,
        slug=slug,
        related=("adapter__run", "base_model"),
    )


def get_cycle_for_user(
    user, cycle_id, *, role: str = Role.MANAGER, slug: str | None = None
) -> RetrainingCycle:
    return _scoped(RetrainingCycle, "retraining cycle", user, cycle_id, role=role, slug=slug)


def get_generation_job_for_user(
    user, job_id, *, role: str = Role.MANAGER, slug: str | None = None
) -> GenerationJob:
    """A generation job of a project the user manages (404 to outsiders, 403 to experts),
    with ``project.user_role`` set. ``slug``: the project the URL names."""
    return _scoped(GenerationJob, "generation job", user, job_id, role=role, slug=slug)
