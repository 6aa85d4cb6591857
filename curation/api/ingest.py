"""The ingestion endpoint: production systems post what their model said.

Thin: parse → access check (managers and admins of the project; a production system uses a
token of a user who manages the project) → ``production_outputs_ingest`` → counts.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import Role
from curation.permissions import get_project_for_user
from curation.services.ingest import MAX_RECORDS, IngestRejected, production_outputs_ingest


class ProductionOutputsInputSerializer(serializers.Serializer):
    """The request's shape only; every record is checked by the service, which names the
    index and field of each problem."""

    records = serializers.ListField(
        child=serializers.JSONField(),
        help_text=(
            f"At most {MAX_RECORDS:,} objects {{client_id, prompt | messages, output, model?, "
            "adapter?, confidence? (0..1), metadata?}."
        ),
    )


class ProductionOutputsOutputSerializer(serializers.Serializer):
    received = serializers.IntegerField(help_text="Records in the request.")
    created = serializers.IntegerField(help_text="New records stored.")
    duplicates = serializers.IntegerField(help_text="Records whose client_id was already stored.")
    sampled = serializers.IntegerField(help_text="New records that became queue items.")
    sampled_client_ids = serializers.ListField(child=serializers.CharField())


IngestErrorsSerializer = inline_serializer(
    "IngestRejected",
    {
        "detail": serializers.CharField(),
        "error_count": serializers.IntegerField(),
        "errors": inline_serializer(
            "IngestError",
            {
                "index": serializers.IntegerField(help_text="Position in records, from 0."),
                "field": serializers.CharField(allow_blank=True),
                "message": serializers.CharField(),
            },
            many=True,
        ),
    },
)


class ProductionOutputsApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        request=ProductionOutputsInputSerializer,
        responses={
            201: OpenApiResponse(ProductionOutputsOutputSerializer, description="Stored."),
            200: OpenApiResponse(
                ProductionOutputsOutputSerializer,
                description="Nothing new: every client_id was already stored (a retry).",
            ),
            400: OpenApiResponse(
                IngestErrorsSerializer,
                description="Bad records (nothing stored), each named by index and field; or "
                "field errors when the body itself is malformed.",
            ),
        },
    )
    def post(self, request, slug: str):
        """Store production outputs (up to 1,000 a request) for monitoring and sample the
        project's fraction into its review queue. Idempotent per ``client_id``."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        data = ProductionOutputsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = production_outputs_ingest(
                project=project, records=data.validated_data["records"]
            )
        except IngestRejected as exc:
            return Response(
                {"detail": str(exc), "error_count": exc.count, "errors": exc.errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(
            ProductionOutputsOutputSerializer(result).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )
