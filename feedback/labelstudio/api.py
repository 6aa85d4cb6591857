"""REST endpoints under ``/api/v1/projects/{slug}/label-studio/``. Thin: parse → access check
(``get_project_for_user``: outsiders 404, experts 403; managers and admins pass) → one
service or selector → output serializer. The webhook alone takes no user: Label Studio
authenticates with the connection's secret in the ``X-Redline-Webhook-Secret`` header."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import Role
from curation.permissions import get_project_for_user
from feedback.labelstudio import selectors, services
from feedback.models import (
    LabelStudioConnection,
    LabelStudioJob,
    LabelStudioJobKind,
    UnknownAnnotatorPolicy,
)
from redline.lib.api import Pagination

MAX_PUSH_ITEMS = 100_000


class ConnectionInputSerializer(serializers.Serializer):
    url = serializers.CharField(help_text="The Label Studio server, e.g. https://ls.example.com.")
    token = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=True,
        write_only=True,
        help_text="API token (personal access token or legacy token). Required the first time; "
        "left out or blank later, the stored token is kept. Never returned.",
    )
    redline_url = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Redline's address as Label Studio reaches it (for the webhook that push "
        "registers), e.g. https://redline.example.com.",
    )
    unknown_annotators = serializers.ChoiceField(
        choices=UnknownAnnotatorPolicy.choices, default=UnknownAnnotatorPolicy.SKIP
    )


class ConnectionOutputSerializer(serializers.ModelSerializer):
    token = serializers.CharField(source="token_masked", help_text="Masked: the last 4 characters.")
    webhook_url = serializers.SerializerMethodField()
    webhook_header = serializers.SerializerMethodField()
    webhook_secret = serializers.CharField(
        help_text="Label Studio sends it in the X-Redline-Webhook-Secret header; push sets "
        "that up for you."
    )

    class Meta:
        model = LabelStudioConnection
        fields = [
            "url",
            "token",
            "redline_url",
            "unknown_annotators",
            "ls_project_id",
            "ls_webhook_id",
            "webhook_url",
            "webhook_header",
            "webhook_secret",
            "updated_at",
        ]
        read_only_fields = fields

    def get_webhook_url(self, obj) -> str:
        return services.webhook_url(obj)

    def get_webhook_header(self, obj) -> str:
        return services.WEBHOOK_HEADER


class ConnectionCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    user_email = serializers.CharField()
    ls_project_title = serializers.CharField()


class JobOutputSerializer(serializers.ModelSerializer):
    # Plain strings in the schema: a "status" enum would collide with other apps' job states.
    kind = serializers.CharField(help_text="push | pull | file_import")
    status = serializers.CharField(help_text="queued | running | succeeded | failed")

    class Meta:
        model = LabelStudioJob
        fields = [
            "id",
            "kind",
            "status",
            "trigger",
            "scope",
            "total",
            "done",
            "counts",
            "errors",
            "error_count",
            "unknown_annotators",
            "message",
            "created_at",
            "started_at",
            "finished_at",
            "seconds",
        ]
        read_only_fields = fields


class PushInputSerializer(serializers.Serializer):
    item_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        default=list,
        max_length=MAX_PUSH_ITEMS,
        help_text="Items to push; left out: every item not pushed yet.",
    )


class FileImportInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A Label Studio JSON export (tasks with annotations).")


def _connection(project) -> LabelStudioConnection:
    conn = selectors.connection_for(project=project)
    if conn is None:
        raise Http404("This project is not connected to Label Studio.")
    conn.project = project
    return conn


class ConnectionApi(APIView):
    """The project's Label Studio connection (managers and admins)."""

    @extend_schema(responses=ConnectionOutputSerializer)
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        return Response(ConnectionOutputSerializer(_connection(project)).data)

    @extend_schema(request=ConnectionInputSerializer, responses=ConnectionOutputSerializer)
    def put(self, request, slug: str):
        """Create or replace the connection (a blank token keeps the stored one)."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        data = ConnectionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        conn = services.connection_set(project=project, actor=request.user, **data.validated_data)
        return Response(ConnectionOutputSerializer(conn).data)

    @extend_schema(responses={204: None})
    def delete(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        if not services.connection_delete(project=project):
            raise Http404("This project is not connected to Label Studio.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConnectionTestApi(APIView):
    @extend_schema(request=None, responses=ConnectionCheckSerializer)
    def post(self, request, slug: str):
        """Ask Label Studio who the stored token belongs to. Answers 200 with ``ok`` false and
        the reason when Label Studio cannot be reached or refuses the token."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        check = services.connection_test(conn=_connection(project))
        return Response(ConnectionCheckSerializer(check).data)


class PushApi(APIView):
    @extend_schema(
        request=PushInputSerializer,
        responses={202: JobOutputSerializer},
        description="Queue a push: the Label Studio project is created (or reused) and the "
        "items not pushed yet become tasks. Poll the job.",
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        _connection(project)
        data = PushInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.job_submit(
            project=project,
            kind=LabelStudioJobKind.PUSH,
            created_by=request.user,
            scope=sorted(set(data.validated_data["item_ids"])),
        )
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class PullApi(APIView):
    @extend_schema(
        request=None,
        responses={202: JobOutputSerializer},
        description="Queue a pull of every annotation of the linked Label Studio project: new "
        "ones become reviews, changed ones amendments, unchanged ones nothing. Poll the job.",
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        _connection(project)
        job = services.job_submit(
            project=project, kind=LabelStudioJobKind.PULL, created_by=request.user
        )
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class FileImportApi(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": FileImportInputSerializer},
        responses={202: JobOutputSerializer},
        description="Upload a Label Studio JSON export: tasks become items (unless Redline "
        "pushed them), annotations reviews. Needs no connection. Poll the job.",
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        data = FileImportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        job = services.file_import_submit(
            project=project, created_by=request.user, filename=upload.name, chunks=upload.chunks()
        )
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobListApi(APIView):
    @extend_schema(responses=JobOutputSerializer(many=True))
    def get(self, request, slug: str):
        """The project's pushes, pulls and file imports, newest first, with their reports."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.job_list(project=project), request, self)
        return paginator.get_paginated_response(JobOutputSerializer(page, many=True).data)


class JobDetailApi(APIView):
    @extend_schema(responses=JobOutputSerializer)
    def get(self, request, slug: str, job_id: int):
        """One job's status, progress (``done`` of ``total``) and report."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        job = selectors.job_get(project=project, job_id=job_id)
        if job is None:
            raise Http404("No such job.")
        return Response(JobOutputSerializer(job).data)


class WebhookApi(APIView):
    """Called by Label Studio on ANNOTATION_CREATED / ANNOTATION_UPDATED."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [JSONParser]

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter(
                services.WEBHOOK_HEADER,
                location=OpenApiParameter.HEADER,
                required=True,
                description="The connection's webhook secret.",
            )
        ],
        responses={
            202: OpenApiResponse(description="A pull of the task was queued."),
            200: OpenApiResponse(description="An event that needs no pull."),
            403: OpenApiResponse(description="Wrong or missing secret (or no such connection)."),
        },
        auth=[],
    )
    def post(self, request, slug: str):
        try:
            job = services.webhook_receive(
                project_slug=slug,
                secret=request.headers.get(services.WEBHOOK_HEADER, ""),
                payload=request.data,
            )
        except services.WebhookRefused:
            return Response({"detail": "Refused."}, status=status.HTTP_403_FORBIDDEN)
        if job is None:
            return Response({"detail": "Nothing to pull."}, status=status.HTTP_200_OK)
        return Response({"job": job.pk}, status=status.HTTP_202_ACCEPTED)
