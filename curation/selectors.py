"""Reads that are more than a ``get``."""

from __future__ import annotations

from django.db.models import QuerySet

from curation.models import Membership, Project
from curation.permissions import projects_visible_to


def project_list_for_user(*, user) -> QuerySet[Project]:
    return projects_visible_to(user).select_related("created_by").order_by("name")


def membership_list(*, project: Project) -> QuerySet[Membership]:
    return project.memberships.select_related("user").order_by("role", "user__username")
