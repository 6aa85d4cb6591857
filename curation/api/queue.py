"""Queue endpoints: claim the next item, renew or release a lease."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors
from curation.permissions import get_item_for_user, get_project_for_user
from curation.serializers import QueueItemSerializer
from curation.services.queue import (
    LeaseLost,
    queue_claim_next,
    queue_lease_release,
    queue_lease_renew,
)

ClaimSerializer = inline_serializer(
    "Claim", {"item": QueueItemSerializer(), "lease_expires_at": serializers.DateTimeField()}
)
LeaseSerializer = inline_serializer("Lease", {"lease_expires_at": serializers.DateTimeField()})
ReleaseSerializer = inline_serializer("Release", {"released": serializers.BooleanField()})


class QueueClaimApi(APIView):
    @extend_schema(
        request=None,
        responses={
            200: ClaimSerializer,
            204: OpenApiResponse(description="Nothing is left for you in this project."),
        },
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug)
        claim = queue_claim_next(project=project, expert=request.user)
        if claim is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            {
                "item": selectors.queue_item_payload(item=claim.item),
                "lease_expires_at": serializers.DateTimeField().to_representation(claim.expires_at),
            }
        )


class LeaseRenewApi(APIView):
    @extend_schema(
        request=None,
        responses={200: LeaseSerializer, 409: OpenApiResponse(description="Lease lost.")},
    )
    def post(self, request, item_id: int):
        item = get_item_for_user(request.user, item_id)
        try:
            assignment = queue_lease_renew(item=item, expert=request.user)
        except LeaseLost as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(
            {
                "lease_expires_at": serializers.DateTimeField().to_representation(
                    assignment.expires_at
                )
            }
        )


class LeaseReleaseApi(APIView):
    @extend_schema(request=None, responses={200: ReleaseSerializer})
    def post(self, request, item_id: int):
        item = get_item_for_user(request.user, item_id)
        return Response({"released": queue_lease_release(item=item, expert=request.user)})
