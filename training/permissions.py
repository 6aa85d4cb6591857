"""Access helpers for training objects: every dataset version id from a request goes
through here. Dataset versions belong to their project's managers (and admins): outsiders
get 404, experts 403, as for every project object."""

from __future__ import annotations

from django.http import Http404

from curation.models import Role
from curation.permissions import require_role, user_role
from training.models import DatasetVersion


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
