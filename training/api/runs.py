"""Training-run API: launch, read, cancel; adapters; base models.

Thin: parse (input serializer) → access check (``get_dataset_version_for_user`` /
``get_run_for_user``: outsiders 404, members under the role 403) → one service → output
serializer. Launching and cancelling need the admin role; reading runs and adapters, the
manager role. Base models are global: anyone signed in lists them, admins (staff) add them.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from training.models import Adapter, BaseModel, TrainingMethod, TrainingRun
from training.permissions import (
    get_adapter_for_user,
    get_dataset_version_for_user,
    get_run_for_user,
)
from training.selectors import base_model_by_reference
from training.services import runs as services_runs

ADMIN = "admin"


class TrainingRunInputSerializer(serializers.Serializer):
    dataset = serializers.IntegerField(help_text="Dataset version id.")
    base_model = serializers.CharField(help_text="Base model id or name.")
    method = serializers.ChoiceField(choices=TrainingMethod.values)
    config = serializers.DictField(required=False, default=dict)


class BaseModelInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    reference = serializers.CharField(max_length=500, help_text="Hub id or local folder.")
    revision = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class BaseModelOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = BaseModel
        fields = ["id", "name", "reference", "revision", "parameters", "notes", "builtin",
                  "created_at"]  # fmt: skip


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    dataset = serializers.IntegerField(source="dataset_version_id")
    base_model = serializers.CharField(source="base_model.name")
    adapter = serializers.SerializerMethodField()
    progress_percent = serializers.IntegerField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "dataset", "base_model", "method", "config", "status", "phase", "step",
            "total_steps", "progress_percent", "epoch", "loss", "eval_loss", "learning_rate",
            "tokens_per_s", "eta_s", "metrics_history", "log", "error", "cancel_requested",
            "created_via", "created_at", "started_at", "heartbeat_at", "finished_at", "adapter",
        ]  # fmt: skip

    def get_adapter(self, run) -> int | None:
        adapter = Adapter.objects.filter(run=run).values_list("pk", flat=True).first()
        return adapter


class AdapterOutputSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(source="run_id")
    dataset = serializers.IntegerField(source="run.dataset_version_id")
    base_model = serializers.CharField(source="run.base_model.name")
    method = serializers.CharField(source="run.method")
    run_url = serializers.SerializerMethodField()
    lineage = serializers.SerializerMethodField()

    class Meta:
        model = Adapter
        fields = ["id", "run", "dataset", "base_model", "method", "path", "manifest", "metrics",
                  "lineage", "created_at", "run_url"]  # fmt: skip

    def get_run_url(self, adapter) -> str:
        return reverse("api:training-run-detail", args=[adapter.run_id])

    def get_lineage(self, adapter) -> dict:
        """Run → dataset version → decisions → experts, as the adapter page shows it."""
        run = adapter.run
        return {
            "run": run.pk,
            "dataset_version": {
                "id": run.dataset_version_id,
                "content_sha256": run.dataset_version.content_sha256,
            },
            **services_runs.adapter_lineage_get(adapter),
        }


class RebaseInputSerializer(serializers.Serializer):
    base_model = serializers.CharField(help_text="Base model id or name.")


def _base_model(value: str) -> BaseModel:
    model = base_model_by_reference(value)
    if model is None:
        from django.core.exceptions import ValidationError

        raise ValidationError({"base_model": [f"No base model {value!r}."]})
    return model


class TrainingRunsApi(APIView):
    @extend_schema(
        request=TrainingRunInputSerializer,
        responses={
            201: OpenApiResponse(TrainingRunOutputSerializer, description="Queued."),
            400: OpenApiResponse(description="Errors by field (config.<setting>, dataset…)."),
        },
        description="Launch a LoRA training run (admins only).",
    )
    def post(self, request):
        data = TrainingRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        version = get_dataset_version_for_user(request.user, values["dataset"], role=ADMIN)
        run = services_runs.training_run_create(
            user=request.user,
            dataset_version=version,
            base_model=_base_model(values["base_model"]),
            method=values["method"],
            config=values["config"],
            via="api",
        )
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    @extend_schema(responses=TrainingRunOutputSerializer)
    def get(self, request, run_id: int):
        run = get_run_for_user(request.user, run_id)
        return Response(TrainingRunOutputSerializer(run).data)


class TrainingRunCancelApi(APIView):
    @extend_schema(request=None, responses=TrainingRunOutputSerializer)
    def post(self, request, run_id: int):
        run = get_run_for_user(request.user, run_id, role=ADMIN)
        run = services_runs.training_run_cancel(run=run)
        return Response(TrainingRunOutputSerializer(run).data)


class AdapterDetailApi(APIView):
    @extend_schema(responses=AdapterOutputSerializer)
    def get(self, request, adapter_id: int):
        adapter = get_adapter_for_user(request.user, adapter_id)
        return Response(AdapterOutputSerializer(adapter).data)


class AdapterRebaseApi(APIView):
    @extend_schema(
        request=RebaseInputSerializer,
        responses={
            201: OpenApiResponse(TrainingRunOutputSerializer, description="Queued."),
            400: OpenApiResponse(description="Errors by field (base_model, config.<setting>…)."),
        },
        description="Train on another base model: the adapter's dataset version and settings "
        "on the chosen base model, as a new queued run (admins only).",
    )
    def post(self, request, adapter_id: int):
        adapter = get_adapter_for_user(request.user, adapter_id, role=ADMIN)
        data = RebaseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = services_runs.training_run_rebase(
            run=adapter.run,
            base_model=_base_model(data.validated_data["base_model"]),
            user=request.user,
            via="api",
        )
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_201_CREATED)


class BaseModelsApi(APIView):
    @extend_schema(responses=BaseModelOutputSerializer(many=True))
    def get(self, request):
        return Response(BaseModelOutputSerializer(BaseModel.objects.all(), many=True).data)

    @extend_schema(request=BaseModelInputSerializer, responses={201: BaseModelOutputSerializer})
    def post(self, request):
        services_runs.require_admin(request.user)
        data = BaseModelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = services_runs.base_model_register(**data.validated_data)
        return Response(BaseModelOutputSerializer(model).data, status=status.HTTP_201_CREATED)
