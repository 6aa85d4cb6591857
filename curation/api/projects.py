"""REST endpoints for projects and members. Thin: parse → access check → service → output."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors
from curation.models import Role
from curation.permissions import get_project_for_user
from curation.serializers import (
    MemberInputSerializer,
    MemberOutputSerializer,
    ProjectCreateInputSerializer,
    ProjectOutputSerializer,
)
from curation.services import projects as services


class ProjectListCreateApi(generics.ListAPIView):
    serializer_class = ProjectOutputSerializer

    def get_queryset(self):
        return selectors.project_list_for_user(user=self.request.user)

    @extend_schema(request=ProjectCreateInputSerializer, responses={201: ProjectOutputSerializer})
    def post(self, request):
        if not request.user.is_staff:
            raise PermissionDenied("Only admins create projects.")
        data = ProjectCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(created_by=request.user, **data.validated_data)
        project = get_project_for_user(request.user, project.slug)
        return Response(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    @extend_schema(responses=ProjectOutputSerializer)
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug)
        return Response(ProjectOutputSerializer(project).data)


class ProjectMembersApi(APIView):
    """Managers and admins list and add members; a known username's role is updated."""

    @extend_schema(responses=MemberOutputSerializer(many=True))
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        members = selectors.membership_list(project=project)
        return Response(MemberOutputSerializer(members, many=True).data)

    @extend_schema(
        request=MemberInputSerializer,
        responses={201: MemberOutputSerializer, 200: MemberOutputSerializer},
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        data = MemberInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership, created = services.membership_set(project=project, **data.validated_data)
        return Response(
            MemberOutputSerializer(membership).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
