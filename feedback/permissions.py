"""Access helpers for decisions: every review id that comes from a request goes through here.

A review belongs to its expert. Managers and admins of the project may read any review but
amend none but their own; other experts (blind mode or not) and outsiders get 404, so a
review id tells nobody else that it exists.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from curation.models import ROLE_RANK, Item, Membership, Project, Role
from curation.permissions import require_role, user_role
from feedback.models import Review
from redline.lib.db import hot_cursor
from redline.lib.rows import RowReader

_ITEMS = RowReader(Item)
_PROJECTS = RowReader(Project)


def get_item_for_review(user, item_id, *, role: str = Role.EXPERT) -> Item:
    """``curation.permissions.get_item_for_user`` for the submit hot path, same answers
    (outsiders 404, below ``role`` 403, ``item.project.user_role`` set) in one SQL statement
    read without the ORM: the item, its project and the user's membership role. Checked on
    every request; nothing is cached."""
    try:
        pk = int(item_id)
    except (TypeError, ValueError):
        raise Http404("No such item.") from None
    if not user.is_authenticated:
        raise Http404("No such item.")
    sql = (
        f"SELECT {_ITEMS.columns('i')}, {_PROJECTS.columns('p')},"  # noqa: S608 (names only)
        f" (SELECT m.role FROM {Membership._meta.db_table} m"
        "   WHERE m.project_id = i.project_id AND m.user_id = %s)"
        f" FROM {Item._meta.db_table} i JOIN {Project._meta.db_table} p ON p.id = i.project_id"
        " WHERE i.id = %s"
    )
    with hot_cursor() as cursor:
        cursor.execute(sql, [user.pk, pk])
        row = cursor.fetchone()
    if row is None:
        raise Http404("No such item.")
    project_role = "admin" if user.is_staff else row[-1]
    if project_role is None:
        raise Http404("No such item.")
    require_role(project_role, role)
    item = _ITEMS.build(row)
    item.project = _PROJECTS.build(row, len(_ITEMS))
    item.project.user_role = project_role
    return item


def get_review_for_user(user, review_id, *, write: bool = False) -> Review:
    """The review ``review_id`` as ``user`` may see it, with ``project.user_role`` set.

    ``write``: the caller will amend it, which only its own expert may do (403 to the
    project's managers and admins, who may read it).
    """
    try:
        pk = int(review_id)
    except (TypeError, ValueError):
        raise Http404("No such review.") from None
    review = (
        Review.objects.select_related("project", "expert", "guideline_version")
        .filter(pk=pk)
        .first()
    )
    if review is None:
        raise Http404("No such review.")
    role = user_role(user, review.project)
    if role is None:
        raise Http404("No such review.")
    review.project.user_role = role
    if review.expert_id == user.pk:
        return review
    if ROLE_RANK[role] < ROLE_RANK[Role.MANAGER]:
        raise Http404("No such review.")
    if write:
        raise PermissionDenied("Only the expert who made a decision can amend it.")
    return review
