"""Access helpers: every id or slug that comes from a request goes through one of these.

Outsiders get 404 (the object does not exist for them); members without the role an action
needs get 403. The UI hiding a button is never the check.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery, Value
from django.http import Http404

from curation.models import ROLE_RANK, ImportJob, Item, Membership, Project, Role


def user_role(user, project: Project) -> str | None:
    """``"admin"`` for staff, the membership role for members, None for outsiders."""
    if not user.is_authenticated:
        return None
    if user.is_staff:
        return "admin"
    return (
        Membership.objects.filter(user=user, project=project).values_list("role", flat=True).first()
    )


def require_role(role: str | None, needed: str) -> None:
    if role is None:
        raise Http404("No such project.")
    if ROLE_RANK[role] < ROLE_RANK[needed]:
        raise PermissionDenied(f"This needs the {needed} role in the project.")


def projects_visible_to(user):
    """Projects the user may see, each annotated with ``user_role``."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.annotate(user_role=Value("admin"))
    role = Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    return Project.objects.filter(memberships__user=user).annotate(user_role=Subquery(role))


def get_project_for_user(user, slug: str, *, role: str = Role.EXPERT) -> Project:
    """The project ``slug`` as ``user`` may see it, with ``project.user_role`` set.

    404 when the user is not a member (or the project does not exist); 403 when they are a
    member whose role is below ``role`` (``"expert"``, ``"manager"`` or ``"admin"``).
    """
    project = projects_visible_to(user).filter(slug=slug).first()
    if project is None:
        raise Http404("No such project.")
    require_role(project.user_role, role)
    return project


def _scoped_object(model, user, pk, role: str, *, select_related=("project",)):
    """``model`` row ``pk`` with its project, and the user's role in that project, read in one
    query (this runs on every item request, the review hot path included)."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404(f"No such {model._meta.verbose_name}.") from None
    rows = model.objects.select_related(*select_related).filter(pk=pk)
    if user.is_authenticated and not user.is_staff:
        member_role = Membership.objects.filter(project=OuterRef("project_id"), user=user)
        rows = rows.annotate(member_role=Subquery(member_role.values("role")[:1]))
    obj = rows.first()
    if obj is None:
        raise Http404(f"No such {model._meta.verbose_name}.")
    if not user.is_authenticated:
        project_role = None
    elif user.is_staff:
        project_role = "admin"
    else:
        project_role = obj.member_role
    if project_role is None:
        raise Http404(f"No such {model._meta.verbose_name}.")
    require_role(project_role, role)
    obj.project.user_role = project_role
    return obj


def get_item_for_user(user, item_id, *, role: str = Role.EXPERT) -> Item:
    """The item as ``user`` may see it (404 to outsiders, 403 below ``role``)."""
    return _scoped_object(Item, user, item_id, role)


def get_import_job_for_user(user, job_id, *, role: str = Role.MANAGER) -> ImportJob:
    """An import job of a project the user manages (404 to outsiders, 403 to experts)."""
    return _scoped_object(ImportJob, user, job_id, role)
