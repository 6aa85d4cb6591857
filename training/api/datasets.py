"""Dataset API: build, list, read, download.

Thin: parse (input serializer) → access check (``get_project_for_user`` /
``get_dataset_version_for_user``: outsiders 404, experts 403) → one service or selector →
output serializer. Managers and admins only.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import Role
from curation.permissions import get_project_for_user
from redline.lib.api import Pagination
from training import selectors, services
from training.permissions import get_dataset_version_for_user
from training.serializers import (
    DatasetBuildInputSerializer,
    DatasetVersionDetailSerializer,
    DatasetVersionOutputSerializer,
)
from training.views.datasets import file_response


class ProjectDatasetsApi(APIView):
    """A project's dataset versions, and new builds."""

    @extend_schema(responses=DatasetVersionOutputSerializer(many=True))
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.dataset_version_list(project=project).select_related("project"),
            request,
            self,
        )
        return paginator.get_paginated_response(
            DatasetVersionOutputSerializer(page, many=True).data
        )

    @extend_schema(
        request=DatasetBuildInputSerializer,
        responses={
            201: OpenApiResponse(
                DatasetVersionOutputSerializer,
                description="A new version, queued: poll GET /api/v1/datasets/{id}/.",
            ),
            200: OpenApiResponse(
                DatasetVersionOutputSerializer,
                description="The same request over the same decisions was made before: that "
                "version (queued, building or built).",
            ),
            400: OpenApiResponse(
                description="Errors by field; an empty selection under `filters`."
            ),
        },
        description="Build a dataset version from the project's final decisions.",
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        data = DatasetBuildInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version, created = services.dataset_version_request(
            project=project, user=request.user, params=dict(data.validated_data), via="api"
        )
        return Response(
            DatasetVersionOutputSerializer(version).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DatasetDetailApi(APIView):
    @extend_schema(responses=DatasetVersionDetailSerializer)
    def get(self, request, version_id: int):
        version = get_dataset_version_for_user(request.user, version_id)
        return Response(DatasetVersionDetailSerializer(version).data)


class DatasetFileApi(APIView):
    """One file of a built version, streamed: a data file, a lineage file or
    ``manifest.json``."""

    def perform_content_negotiation(self, request, force=False):
        # The answer is the file itself, whatever the client accepts.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.BINARY,
            (200, "application/json"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such version, or no such file in it."),
        }
    )
    def get(self, request, version_id: int, name: str):
        version = get_dataset_version_for_user(request.user, version_id)
        return file_response(version, name)
