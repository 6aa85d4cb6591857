"""REST endpoints for a project's review settings and guidelines.

Members read (experts need the modes, schema and guidelines to review); managers and admins
write. Thin: parse → access check → service → output serializer.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors
from curation.models import Role
from curation.permissions import get_project_for_user
from curation.serializers import (
    GuidelineInputSerializer,
    GuidelinesOutputSerializer,
    GuidelineVersionOutputSerializer,
    ProjectSettingsInputSerializer,
    ProjectSettingsOutputSerializer,
)
from curation.services import settings as services


class ProjectSettingsApi(APIView):
    @extend_schema(responses=ProjectSettingsOutputSerializer)
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug)
        return Response(ProjectSettingsOutputSerializer(project).data)

    @extend_schema(
        request=ProjectSettingsInputSerializer, responses=ProjectSettingsOutputSerializer
    )
    def patch(self, request, slug: str):
        """Change any subset of the settings (managers and admins). Overlap k can only go up
        once reviews exist; a label schema's errors name the question."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        data = ProjectSettingsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_settings_update(project=project, **data.validated_data)
        return Response(ProjectSettingsOutputSerializer(project).data)


class ProjectGuidelinesApi(APIView):
    @extend_schema(responses=GuidelinesOutputSerializer)
    def get(self, request, slug: str):
        """The current version (text and sanitised HTML), and every version's number."""
        project = get_project_for_user(request.user, slug)
        body = {
            "current": selectors.guideline_current(project=project),
            "versions": selectors.guideline_list(project=project),
        }
        return Response(GuidelinesOutputSerializer(body).data)

    @extend_schema(
        request=GuidelineInputSerializer,
        responses={201: GuidelineVersionOutputSerializer, 200: GuidelineVersionOutputSerializer},
    )
    def post(self, request, slug: str):
        """Publish a new version (managers and admins): 201 with it, or 200 with the current
        version when the text is unchanged."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        data = GuidelineInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version, created = services.guideline_publish(
            project=project, text=data.validated_data["text"], created_by=request.user
        )
        return Response(
            GuidelineVersionOutputSerializer(version).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
