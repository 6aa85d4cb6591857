"""REST endpoints for browsing items.

Managers and admins read every item of their projects. Experts read an item only as the
queue hands it to them: the list is refused (403), and one item is shown only if they hold
or held an assignment for it.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors
from curation.models import ROLE_RANK, Assignment, Role
from curation.permissions import get_item_for_user, get_project_for_user
from curation.serializers import ItemFilterInputSerializer, ItemOutputSerializer


class ItemCursorPagination(CursorPagination):
    """Keyset pages, newest first by id (ids follow insertion order): no COUNT and no deep
    OFFSET, so page 1,000 of a million items costs what page 1 does."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ProjectItemListApi(generics.ListAPIView):
    """Items of a project, filtered like the item browser (managers and admins)."""

    serializer_class = ItemOutputSerializer
    pagination_class = ItemCursorPagination

    @extend_schema(parameters=[ItemFilterInputSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        project = get_project_for_user(self.request.user, self.kwargs["slug"], role=Role.MANAGER)
        filters = ItemFilterInputSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        items = selectors.item_list(
            project=project, filters=selectors.ItemFilters(**filters.validated_data)
        )
        return items.order_by()  # the paginator orders (by -id)


class ItemDetailApi(APIView):
    @extend_schema(responses=ItemOutputSerializer)
    def get(self, request, item_id: int):
        item = get_item_for_user(request.user, item_id)
        if ROLE_RANK[item.project.user_role] < ROLE_RANK[Role.MANAGER]:
            held = Assignment.objects.filter(item=item, expert=request.user).exists()
            if not held:
                raise PermissionDenied("Experts see an item only once the queue hands it to them.")
        return Response(ItemOutputSerializer(item).data)
