"""Access helpers for decisions: every review id that comes from a request goes through here.

A review belongs to its expert. Managers and admins of the project may read any review but
amend none but their own; other experts (blind mode or not) and outsiders get 404, so a
review id tells nobody else that it exists.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from curation.models import ROLE_RANK, Role
from curation.permissions import user_role
from feedback.models import Review


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
