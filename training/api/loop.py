"""The loop's API: evaluation rounds, promotion and rollback, the current model, retraining
policies and cycles, and adapter downloads for production.

Thin: parse (input serializer) → access check (outsiders 404, members below the role 403)
→ one service → output serializer. Managers read rounds, promotions, policies and cycles and
may close a round being judged; admins start rounds, promote, roll back, edit policies and
approve or cancel cycles. ``current-model`` is read by every member of the project (what a
production system polls). Experts never see a round: its results say which answer was whose.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import Http404, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import Role
from curation.permissions import get_project_for_user
from training.models import (
    Adapter,
    EvaluationRound,
    Promotion,
    RetrainingCycle,
    RetrainingPolicy,
)
from training.permissions import (
    get_adapter_for_user,
    get_cycle_for_user,
    get_dataset_version_for_user,
    get_promotion_for_user,
    get_round_for_user,
)
from training.selectors import project_adapter
from training.services import evaluation as services_evaluation
from training.services import policies as services_policies
from training.services import promotion as services_promotion

ADMIN = "admin"


def _adapter_in(project, adapter_id, field: str) -> Adapter:
    adapter = project_adapter(project, adapter_id)
    if adapter is None:
        raise ValidationError({field: [f"No adapter {adapter_id} in this project."]})
    return adapter


# ---- Evaluation rounds ------------------------------------------------------------------------


class PassRuleInputSerializer(serializers.Serializer):
    threshold = serializers.FloatField(required=False, help_text="Default 0.5.")
    min_judged = serializers.IntegerField(required=False, help_text="Default 10.")


class EvaluationRoundInputSerializer(serializers.Serializer):
    adapter = serializers.IntegerField(help_text="The adapter to evaluate (the subject).")
    baseline = serializers.CharField(
        default="base",
        help_text='"base" (its base model alone), "promoted" (the current model) or an adapter id.',
    )
    dataset_version = serializers.IntegerField(
        required=False, allow_null=True, help_text="Default: the subject's training data."
    )
    limit = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    pass_rule = PassRuleInputSerializer(required=False)
    decoding = serializers.DictField(required=False, allow_null=True)


class EvaluationRoundOutputSerializer(serializers.ModelSerializer):
    status = serializers.CharField(
        help_text="generating | judging | complete | failed | cancelled (RoundStatus)."
    )
    subject = serializers.IntegerField(source="subject_id")
    baseline = serializers.SerializerMethodField()
    generation_job = serializers.IntegerField(source="generation_job_id", allow_null=True)
    dataset_version = serializers.IntegerField(source="dataset_version_id", allow_null=True)
    items = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = EvaluationRound
        fields = [
            "id", "subject", "baseline", "dataset_version", "generation_job", "pass_rule",
            "status", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high", "passed",
            "figures", "error", "trigger", "created_at", "decided_at", "items", "url",
        ]  # fmt: skip

    def get_baseline(self, round_) -> dict:
        return {
            "adapter": round_.baseline_adapter_id,
            "base_model": round_.baseline_base_model.name if round_.baseline_base_model else None,
        }

    def get_items(self, round_) -> int:
        return round_.items.count()

    def get_url(self, round_) -> str:
        return reverse("api:evaluation-detail", args=[round_.pk])


class ExpertBreakdownSerializer(serializers.Serializer):
    username = serializers.CharField()
    wins = serializers.IntegerField()
    ties = serializers.IntegerField()
    losses = serializers.IntegerField()
    neither = serializers.IntegerField()
    win_rate = serializers.FloatField(allow_null=True)


class EvaluationReportSerializer(serializers.Serializer):
    judged = serializers.IntegerField(source="tally.judged")
    neither = serializers.IntegerField(source="tally.neither")
    pending = serializers.IntegerField(source="tally.pending")
    total = serializers.IntegerField(source="tally.total")
    live_win_rate = serializers.FloatField(source="tally.win_rate", allow_null=True)
    experts = ExpertBreakdownSerializer(many=True)
    agreement = serializers.FloatField(allow_null=True)
    agreement_items = serializers.IntegerField()
    alpha = serializers.FloatField(allow_null=True)
    figures = serializers.DictField()
    rule_text = serializers.CharField()


class EvaluationRoundDetailSerializer(EvaluationRoundOutputSerializer):
    report = serializers.SerializerMethodField()

    class Meta(EvaluationRoundOutputSerializer.Meta):
        fields = [*EvaluationRoundOutputSerializer.Meta.fields, "report"]

    @extend_schema_field(EvaluationReportSerializer)
    def get_report(self, round_) -> dict:
        report = services_evaluation.evaluation_round_report(round_=round_)
        return EvaluationReportSerializer(report).data


class ProjectEvaluationsApi(APIView):
    @extend_schema(responses=EvaluationRoundOutputSerializer(many=True))
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        rounds = EvaluationRound.objects.filter(project=project).select_related(
            "baseline_base_model"
        )[:200]
        return Response(EvaluationRoundOutputSerializer(rounds, many=True).data)

    @extend_schema(
        request=EvaluationRoundInputSerializer,
        responses={
            201: OpenApiResponse(EvaluationRoundOutputSerializer, description="Generating."),
            400: OpenApiResponse(description="Errors by field (dataset_version, baseline…)."),
        },
        description="Evaluate an adapter against its base model or the promoted model on "
        "held-out prompts, as blind pairwise items for the project's experts (admins only).",
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=ADMIN)
        data = EvaluationRoundInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        subject = _adapter_in(project, values["adapter"], "adapter")
        baseline = values["baseline"]
        if baseline.isdecimal():  # not isdigit(): '²' is a digit that int() refuses
            baseline = _adapter_in(project, int(baseline), "baseline")
        version = None
        if values.get("dataset_version"):
            version = get_dataset_version_for_user(
                request.user, values["dataset_version"], role=ADMIN, slug=slug
            )
        round_ = services_evaluation.evaluation_round_create(
            subject=subject,
            baseline=baseline,
            dataset_version=version,
            limit=values.get("limit"),
            pass_rule=values.get("pass_rule"),
            decoding=values.get("decoding"),
            created_by=request.user,
        )
        return Response(
            EvaluationRoundOutputSerializer(round_).data, status=status.HTTP_201_CREATED
        )


class EvaluationDetailApi(APIView):
    @extend_schema(responses=EvaluationRoundDetailSerializer)
    def get(self, request, round_id: int):
        round_ = get_round_for_user(request.user, round_id)
        return Response(EvaluationRoundDetailSerializer(round_).data)


class EvaluationCloseApi(APIView):
    @extend_schema(
        request=None,
        responses=EvaluationRoundOutputSerializer,
        description="Close a round being judged now: the frozen pass rule decides on the "
        "judgments so far (managers and admins).",
    )
    def post(self, request, round_id: int):
        round_ = get_round_for_user(request.user, round_id)
        round_ = services_evaluation.evaluation_round_close(round_=round_, closed_by=request.user)
        return Response(EvaluationRoundOutputSerializer(round_).data)


# ---- Promotion and the current model ----------------------------------------------------------


class PromotionInputSerializer(serializers.Serializer):
    adapter = serializers.IntegerField()
    override = serializers.BooleanField(
        default=False, help_text="Promote without a passed round (needs a reason)."
    )
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class RollbackInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class PromotionOutputSerializer(serializers.ModelSerializer):
    adapter = serializers.IntegerField(source="adapter_id", allow_null=True)
    base_model = serializers.CharField(source="base_model.name")
    evaluation_round = serializers.IntegerField(source="evaluation_round_id", allow_null=True)
    rollback_of = serializers.IntegerField(source="rollback_of_id", allow_null=True)
    promoted_by = serializers.CharField(source="promoted_by.username", allow_null=True)

    class Meta:
        model = Promotion
        fields = ["id", "adapter", "base_model", "evaluation_round", "override", "reason",
                  "rollback_of", "promoted_by", "created_at"]  # fmt: skip


class ProjectPromotionsApi(APIView):
    @extend_schema(responses=PromotionOutputSerializer(many=True))
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        history = services_promotion.promotion_history(project=project)[:500]
        return Response(PromotionOutputSerializer(history, many=True).data)

    @extend_schema(
        request=PromotionInputSerializer,
        responses={201: PromotionOutputSerializer, 400: OpenApiResponse(description="Refused.")},
        description="Promote an adapter to be the project's current model (admins only): it "
        "needs a passed evaluation round, or override=true with a reason.",
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=ADMIN)
        data = PromotionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        promotion = services_promotion.promotion_create(
            project=project,
            adapter=_adapter_in(project, values["adapter"], "adapter"),
            user=request.user,
            override=values["override"],
            reason=values["reason"],
        )
        return Response(PromotionOutputSerializer(promotion).data, status=status.HTTP_201_CREATED)


class PromotionRollbackApi(APIView):
    @extend_schema(
        request=RollbackInputSerializer,
        responses={201: PromotionOutputSerializer},
        description="Make an earlier promotion's model current again (admins only).",
    )
    def post(self, request, slug: str, promotion_id: int):
        to = get_promotion_for_user(request.user, promotion_id, role=ADMIN, slug=slug)
        data = RollbackInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        promotion = services_promotion.promotion_rollback(
            project=to.project, to=to, user=request.user, reason=data.validated_data["reason"]
        )
        return Response(PromotionOutputSerializer(promotion).data, status=status.HTTP_201_CREATED)


class CurrentModelBaseSerializer(serializers.Serializer):
    name = serializers.CharField()
    reference = serializers.CharField()
    revision = serializers.CharField()


class AdapterFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()


class CurrentAdapterSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    download_url = serializers.CharField()
    files = AdapterFileSerializer(many=True)
    manifest = serializers.DictField()


class CurrentModelSerializer(serializers.Serializer):
    project = serializers.CharField()
    promotion = serializers.IntegerField(allow_null=True)
    base_model = CurrentModelBaseSerializer(allow_null=True)
    adapter = CurrentAdapterSerializer(allow_null=True)
    evaluation_round = serializers.IntegerField(allow_null=True)
    override = serializers.BooleanField()
    rollback_of = serializers.IntegerField(allow_null=True)
    promoted_by = serializers.CharField(allow_null=True)
    promoted_at = serializers.DateTimeField(allow_null=True)


def current_model_document(request, project) -> dict:
    current = services_promotion.promotion_current(project=project)
    if current is None:
        return {
            "project": project.slug, "promotion": None, "base_model": None, "adapter": None,
            "evaluation_round": None, "override": False, "rollback_of": None,
            "promoted_by": None, "promoted_at": None,
        }  # fmt: skip
    adapter = None
    if current.adapter is not None:
        adapter = {
            "id": current.adapter.pk,
            "download_url": request.build_absolute_uri(
                reverse("api:adapter-download", args=[current.adapter.pk])
            ),
            "files": services_promotion.adapter_files(current.adapter),
            "manifest": current.adapter.manifest,
        }
    return {
        "project": project.slug,
        "promotion": current.pk,
        "base_model": {
            "name": current.base_model.name,
            "reference": current.base_model.reference,
            "revision": current.base_model.revision,
        },
        "adapter": adapter,
        "evaluation_round": current.evaluation_round_id,
        "override": current.override,
        "rollback_of": current.rollback_of_id,
        "promoted_by": current.promoted_by.username if current.promoted_by else None,
        "promoted_at": current.created_at,
    }


class CurrentModelApi(APIView):
    @extend_schema(
        responses=CurrentModelSerializer,
        description="Which base model and adapter the project serves now (its newest "
        "promotion); every field null before the first. Any member of the project may read "
        "it; the adapter's download URL needs the manager role.",
    )
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.EXPERT)
        return Response(CurrentModelSerializer(current_model_document(request, project)).data)


class AdapterDownloadApi(APIView):
    @extend_schema(
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
        description="The adapter's files in one zip (managers and admins).",
    )
    def get(self, request, adapter_id: int):
        from training.views.runs import adapter_archive

        adapter = get_adapter_for_user(request.user, adapter_id)
        root = Path(settings.STORAGE_DIR).resolve()
        folder = (root / adapter.path).resolve()
        if not folder.is_relative_to(root) or not folder.is_dir():
            raise Http404("This adapter's files are gone.")
        response = StreamingHttpResponse(
            adapter_archive(folder, f"adapter-{adapter.pk}"), content_type="application/zip"
        )
        response["Content-Disposition"] = f'attachment; filename="adapter-{adapter.pk}.zip"'
        return response


# ---- Retraining policies and cycles -----------------------------------------------------------


class RetrainingPolicySerializer(serializers.ModelSerializer):
    min_new_decisions = serializers.IntegerField(allow_null=True, required=False, min_value=1)
    updated_by = serializers.CharField(source="updated_by.username", read_only=True, default=None)

    class Meta:
        model = RetrainingPolicy
        fields = ["enabled", "min_new_decisions", "on_drift", "require_approval", "updated_by",
                  "updated_at"]  # fmt: skip
        read_only_fields = ["updated_by", "updated_at"]


class CycleOutputSerializer(serializers.ModelSerializer):
    status = serializers.CharField(
        help_text="running | awaiting_approval | succeeded | failed | cancelled (CycleStatus)."
    )
    dataset_version = serializers.IntegerField(source="dataset_version_id", allow_null=True)
    training_run = serializers.IntegerField(source="training_run_id", allow_null=True)
    evaluation_round = serializers.IntegerField(source="evaluation_round_id", allow_null=True)
    approved_by = serializers.CharField(source="approved_by.username", allow_null=True)

    class Meta:
        model = RetrainingCycle
        fields = ["id", "trigger", "trigger_detail", "status", "step", "dataset_version",
                  "training_run", "evaluation_round", "error", "approved_by", "created_at",
                  "finished_at"]  # fmt: skip


class RetrainingPolicyApi(APIView):
    @extend_schema(responses=RetrainingPolicySerializer)
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        return Response(
            RetrainingPolicySerializer(services_policies.policy_for(project=project)).data
        )

    @extend_schema(
        request=RetrainingPolicySerializer,
        responses=RetrainingPolicySerializer,
        description="Set the project's retraining policy (admins only).",
    )
    def put(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=ADMIN)
        data = RetrainingPolicySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        policy = services_policies.policy_update(
            project=project,
            user=request.user,
            enabled=values.get("enabled", False),
            min_new_decisions=values.get("min_new_decisions"),
            on_drift=values.get("on_drift", False),
            require_approval=values.get("require_approval", True),
        )
        return Response(RetrainingPolicySerializer(policy).data)


class RetrainingCyclesApi(APIView):
    @extend_schema(responses=CycleOutputSerializer(many=True))
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        cycles = RetrainingCycle.objects.filter(project=project).select_related("approved_by")
        return Response(CycleOutputSerializer(cycles[:200], many=True).data)


class RetrainingCycleActionApi(APIView):
    action = ""

    @extend_schema(request=None, responses=CycleOutputSerializer)
    def post(self, request, slug: str, cycle_id: int):
        cycle = get_cycle_for_user(request.user, cycle_id, role=ADMIN, slug=slug)
        if self.action == "approve":
            cycle = services_policies.cycle_approve(cycle=cycle, user=request.user)
        else:
            cycle = services_policies.cycle_cancel(cycle=cycle, user=request.user)
        return Response(CycleOutputSerializer(cycle).data)
