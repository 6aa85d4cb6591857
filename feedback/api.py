"""Feedback API: reviews, agreement, adjudication, outcomes and gold answers.

Thin: parse (input serializer) → access check (``get_item_for_user`` / ``get_review_for_user``
/ ``get_project_for_user``: outsiders 404, too low a role 403) → one service or selector →
output serializer. Experts only ever see their own reviews here (blind mode); managers and
admins see every review of their projects, and alone adjudicate and set gold answers.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import selectors as curation_selectors
from curation.api.queue import ClaimSerializer
from curation.models import GuidelineVersion, Role
from curation.permissions import get_item_for_user, get_project_for_user
from curation.services.queue import ItemFull, LeaseLost, queue_claim_next
from feedback import selectors
from feedback.models import GoldAnswer, ItemOutcome
from feedback.permissions import get_item_for_review, get_review_for_user
from feedback.serializers import (
    AdjudicateInputSerializer,
    AgreementOutputSerializer,
    GoldInputSerializer,
    GoldOutputSerializer,
    OutcomeOutputSerializer,
    ReviewAmendInputSerializer,
    ReviewDetailOutputSerializer,
    ReviewOutputSerializer,
    ReviewSubmitInputSerializer,
    preference_kwargs,
    review_payload,
    review_submit_input,
)
from feedback.services import (
    AlreadyDecided,
    gold_clear,
    gold_set,
    item_adjudicate,
    review_amend,
    review_submit,
)

ReviewSubmittedSerializer = inline_serializer(
    "ReviewSubmitted",
    {
        "review": ReviewOutputSerializer(),
        # The same component as the claim endpoint's answer, so clients share one type.
        "next": ClaimSerializer.__class__(
            required=False,
            allow_null=True,
            help_text="Only when claim_next was asked: your next item under a lease, exactly "
            "as POST /projects/{slug}/queue/claim/ answers, or null when nothing is left.",
        ),
    },
)
ReviewConflictSerializer = inline_serializer(
    "ReviewConflict",
    {
        "detail": serializers.CharField(),
        "review": serializers.IntegerField(
            required=False, help_text="Your existing review, when you already decided the item."
        ),
    },
)
_FIELD_ERRORS = OpenApiResponse(
    description="Errors by field: {field: [messages]}; label answers as labels.<question key>."
)


def _claim_body(claim) -> dict | None:
    """The claim endpoint's answer for ``claim`` (None when nothing is left)."""
    if claim is None:
        return None
    return {
        "item": curation_selectors.queue_item_payload(item=claim.item),
        "lease_expires_at": serializers.DateTimeField().to_representation(claim.expires_at),
    }


def _guideline_version(project, number: int | None) -> GuidelineVersion | None:
    """The project's guideline version ``number`` (the API speaks version numbers; the
    service takes the row). None: the service records the current version."""
    if number is None:
        return None
    version = GuidelineVersion.objects.filter(project=project, version=number).first()
    if version is None:
        raise ValidationError({"guideline_version": f"This project has no guidelines v{number}."})
    return version


class ItemReviewsApi(APIView):
    @extend_schema(responses=ReviewOutputSerializer(many=True))
    def get(self, request, item_id: int):
        """The item's reviews you may read: all of them for managers and admins, your own for
        experts (blind mode)."""
        item = get_item_for_user(request.user, item_id)
        reviews = selectors.reviews_visible(
            item=item, user=request.user, role=item.project.user_role
        )
        return Response(ReviewOutputSerializer(reviews, many=True).data)

    @extend_schema(
        request=ReviewSubmitInputSerializer,
        responses={
            201: ReviewSubmittedSerializer,
            200: OpenApiResponse(
                ReviewSubmittedSerializer,
                description="A retry with the same idempotency key: the first review.",
            ),
            400: _FIELD_ERRORS,
            409: OpenApiResponse(
                ReviewConflictSerializer,
                description="Your lease was lost, the item meanwhile got all its reviews, or "
                "you already decided it (then review is that decision's id: amend it).",
            ),
        },
    )
    def post(self, request, item_id: int):
        """Submit your decision on an item you hold under a lease. Answers
        ``{"review": ...}``, plus ``"next"`` when ``claim_next`` was true."""
        # The review hot path (bench/review_bench.py): the access check, the input's parse
        # and the answer are built without the ORM and DRF's field machinery, with the same
        # checks and the same answers as get_item_for_user and the serializers.
        item = get_item_for_review(request.user, item_id)
        fields = review_submit_input(request.data)
        if fields is None:  # anything unusual: the serializer decides, and words the errors
            data = ReviewSubmitInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            fields = dict(data.validated_data)
        claim_next = fields.pop("claim_next")
        guideline = _guideline_version(item.project, fields.pop("guideline_version"))
        fields.update(preference_kwargs(fields.pop("preferred_candidate")))
        try:
            result = review_submit(
                item=item, expert=request.user, guideline_version=guideline, **fields
            )
        except (LeaseLost, ItemFull) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except AlreadyDecided as exc:
            return Response(
                {"detail": str(exc), "review": exc.review.pk}, status=status.HTTP_409_CONFLICT
            )
        review = result.review
        if guideline is not None and review.guideline_version_id == guideline.pk:
            review.guideline_version = guideline  # already loaded: no query to show its number
        body = {"review": review_payload(review)}
        if claim_next:
            claim = queue_claim_next(
                project=item.project, expert=request.user, after_decision=result.created
            )
            body["next"] = _claim_body(claim)
        return Response(
            body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )


class ReviewDetailApi(APIView):
    @extend_schema(responses=ReviewDetailOutputSerializer)
    def get(self, request, review_id: int):
        """A review with its revisions: for its expert, and the project's managers and admins
        (anyone else: 404)."""
        review = get_review_for_user(request.user, review_id)
        return _detail(review)

    @extend_schema(
        request=ReviewAmendInputSerializer,
        responses={200: ReviewDetailOutputSerializer, 400: _FIELD_ERRORS},
    )
    def patch(self, request, review_id: int):
        """Amend your own decision: the fields given change, and a new revision records it
        (nothing changed: no revision). Managers may read others' reviews but not amend them
        (403)."""
        review = get_review_for_user(request.user, review_id, write=True)
        data = ReviewAmendInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "preferred_candidate" in changes:
            changes.update(preference_kwargs(changes.pop("preferred_candidate")))
        review = review_amend(review=review, editor=request.user, **changes)
        return _detail(review)


def _detail(review) -> Response:
    revisions = list(selectors.review_revisions(review=review))
    return Response(ReviewDetailOutputSerializer(review, context={"revisions": revisions}).data)


class ProjectAgreementApi(APIView):
    @extend_schema(responses=AgreementOutputSerializer)
    def get(self, request, slug: str):
        """Agreement between experts (managers and admins): raw agreement and Krippendorff's
        alpha for verdicts, preferences, the rating and each label question, with the number
        of items each figure rests on."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        report = selectors.agreement_report(project=project)
        return Response(AgreementOutputSerializer(report).data)


class ItemAdjudicateApi(APIView):
    @extend_schema(
        request=AdjudicateInputSerializer,
        responses={200: OutcomeOutputSerializer, 400: _FIELD_ERRORS},
    )
    def post(self, request, item_id: int):
        """A manager's final decision on an item that has all its reviews; it becomes the
        item's outcome (source ``adjudicated``)."""
        item = get_item_for_user(request.user, item_id, role=Role.MANAGER)
        data = AdjudicateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields.update(preference_kwargs(fields.pop("preferred_candidate")))
        outcome = item_adjudicate(item=item, manager=request.user, **fields)
        return Response(OutcomeOutputSerializer(outcome).data)


class ItemOutcomeApi(APIView):
    @extend_schema(
        responses={
            200: OutcomeOutputSerializer,
            404: OpenApiResponse(description="No such item, or no outcome yet."),
        }
    )
    def get(self, request, item_id: int):
        """The item's final decision (managers and admins); 404 until it has its k reviews."""
        item = get_item_for_user(request.user, item_id, role=Role.MANAGER)
        outcome = ItemOutcome.objects.select_related("decided_by").filter(item_id=item.pk).first()
        if outcome is None:
            raise Http404("This item has no outcome yet.")
        return Response(OutcomeOutputSerializer(outcome).data)


class ItemGoldApi(APIView):
    """An item's gold answer (managers and admins; experts must not learn which items are
    gold: 403)."""

    @extend_schema(
        responses={
            200: GoldOutputSerializer,
            404: OpenApiResponse(description="No such item, or it is not gold."),
        }
    )
    def get(self, request, item_id: int):
        item = get_item_for_user(request.user, item_id, role=Role.MANAGER)
        gold = GoldAnswer.objects.select_related("created_by").filter(item_id=item.pk).first()
        if gold is None:
            raise Http404("This item has no gold answer.")
        return Response(GoldOutputSerializer(gold).data)

    @extend_schema(
        request=GoldInputSerializer, responses={200: GoldOutputSerializer, 400: _FIELD_ERRORS}
    )
    def put(self, request, item_id: int):
        """Set (or replace) the item's expected answer."""
        item = get_item_for_user(request.user, item_id, role=Role.MANAGER)
        data = GoldInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields.update(preference_kwargs(fields.pop("preferred_candidate")))
        gold = gold_set(item=item, actor=request.user, **fields)
        return Response(GoldOutputSerializer(gold).data)

    @extend_schema(request=None, responses={204: OpenApiResponse(description="Not gold now.")})
    def delete(self, request, item_id: int):
        item = get_item_for_user(request.user, item_id, role=Role.MANAGER)
        gold_clear(item=item, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
