"""REST endpoints for imports. Thin: parse → access check → service → output serializer."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors
from curation.models import ImportStatus, Role
from curation.permissions import get_import_job_for_user, get_project_for_user
from curation.serializers import (
    ImportItemsInputSerializer,
    ImportJobOutputSerializer,
    ImportUploadInputSerializer,
)
from curation.services import imports as services
from redline.lib.api import Pagination


class ProjectImportsApi(APIView):
    """Managers and admins list a project's imports and start new ones."""

    parser_classes = [MultiPartParser, JSONParser]

    @extend_schema(responses=ImportJobOutputSerializer(many=True))
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.import_job_list(project=project).select_related("project"), request, self
        )
        return paginator.get_paginated_response(ImportJobOutputSerializer(page, many=True).data)

    @extend_schema(
        request={
            "multipart/form-data": ImportUploadInputSerializer,
            "application/json": ImportItemsInputSerializer,
        },
        responses={
            202: OpenApiResponse(
                ImportJobOutputSerializer, description="A file upload, queued for import."
            ),
            201: OpenApiResponse(
                ImportJobOutputSerializer, description="A JSON body, imported at once."
            ),
            400: OpenApiResponse(
                ImportJobOutputSerializer,
                description="A JSON body with bad items: the failed job, with its errors "
                "(or field errors when the request itself is malformed).",
            ),
        },
        description=(
            "Upload a file (multipart `file`, optional `format`): the import is queued and runs "
            'on a worker; poll `GET /api/v1/imports/{id}/`. Or post `{"items": [...]}` '
            "(at most 10,000): imported at once. All or nothing; existing external_ids skipped."
        ),
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        if request.content_type.startswith("multipart/"):
            data = ImportUploadInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            upload = data.validated_data["file"]
            job = services.import_job_submit(
                project=project,
                created_by=request.user,
                filename=upload.name,
                format=data.validated_data["format"],
                chunks=upload.chunks(),
            )
            return Response(ImportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        data = ImportItemsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.import_items_inline(
            project=project, created_by=request.user, items=data.validated_data["items"]
        )
        job = get_import_job_for_user(request.user, job.pk)
        ok = job.status == ImportStatus.SUCCEEDED
        return Response(
            ImportJobOutputSerializer(job).data,
            status=status.HTTP_201_CREATED if ok else status.HTTP_400_BAD_REQUEST,
        )


class ImportDetailApi(APIView):
    @extend_schema(responses=ImportJobOutputSerializer)
    def get(self, request, import_id: int):
        job = get_import_job_for_user(request.user, import_id, role=Role.MANAGER)
        return Response(ImportJobOutputSerializer(job).data)
