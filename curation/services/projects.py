"""Every write in curation goes through a function here (keyword-only, typed)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from curation.models import Membership, Project, Role


@transaction.atomic
def project_create(*, name: str, created_by, slug: str = "", description: str = "") -> Project:
    """Create a project; the slug is derived from the name when not given. Admins only (checked
    by the caller)."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A project needs a name."})
    slug = (slug or slugify(name))[:80]
    if not slug:
        raise ValidationError({"slug": "Give a slug made of letters, digits, '-' or '_'."})
    if Project.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"A project with slug {slug!r} already exists."})
    project = Project(name=name, slug=slug, description=description, created_by=created_by)
    project.full_clean()
    project.save()
    return project


@transaction.atomic
def membership_set(*, project: Project, username: str, role: str) -> tuple[Membership, bool]:
    """Add ``username`` to ``project`` with ``role``, or change their role. Returns
    ``(membership, created)``. The caller has checked that the actor is a manager or admin."""
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; use one of {Role.values}."})
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValidationError({"username": f"No user named {username!r}."})
    membership, created = Membership.objects.select_for_update().get_or_create(
        project=project, user=user, defaults={"role": role}
    )
    if not created and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    return membership, created


def membership_remove(*, project: Project, username: str) -> bool:
    deleted, _ = Membership.objects.filter(project=project, user__username=username).delete()
    return bool(deleted)
