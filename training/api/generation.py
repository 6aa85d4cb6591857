"""Generation-job API: create (JSON, or multipart with a prompt file), list, read with the
outputs page by page, cancel.

Who may do what: managers generate in projects they manage (candidates for the review queue
and Try it answers) and read and cancel those jobs; admins (staff) do the same in every
project. Experts get 403, outsiders 404 (``get_project_for_user`` /
``get_generation_job_for_user``). Evaluation jobs are made by evaluation rounds, not here.

Thin: parse (input serializer) → access check → ``resolve_targets`` → one service → output
serializer.
"""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import Role
from curation.permissions import get_project_for_user
from redline.lib.api import Pagination
from training import selectors
from training.models import (
    Adapter,
    BaseModel,
    DatasetVersion,
    GenerationJob,
    GenerationOutput,
    GenerationPurpose,
    GenerationSource,
    GenerationTarget,
)
from training.permissions import get_generation_job_for_user
from training.selectors import base_model_by_reference, project_adapter
from training.services import generation as services_generation

API_PURPOSES = (GenerationPurpose.CANDIDATES, GenerationPurpose.TRY_IT)


def _purpose_allowed(value: str) -> str:
    if value not in API_PURPOSES:
        raise serializers.ValidationError(
            f"Only {' and '.join(API_PURPOSES)} jobs are made here; evaluation rounds make their own."
        )
    return value


class TargetInputSerializer(serializers.Serializer):
    base_model = serializers.CharField(help_text="Base model id or name.")
    adapter = serializers.IntegerField(
        required=False, allow_null=True, help_text="Adapter id (of this project), or null."
    )


class GenerationJobInputSerializer(serializers.Serializer):
    targets = TargetInputSerializer(many=True, allow_empty=False)
    source = serializers.ChoiceField(choices=GenerationSource.choices)
    purpose = serializers.ChoiceField(
        choices=GenerationPurpose.choices,
        default=GenerationPurpose.CANDIDATES,
        validators=[_purpose_allowed],
        help_text="candidates or try_it (evaluation jobs are made by evaluation rounds).",
    )
    dataset_version = serializers.IntegerField(
        required=False, allow_null=True, help_text="For source eval_split."
    )
    prompts = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text="For source prompts: strings, chats ([{role, content}]) or "
        "{prompt|messages, external_id} objects.",
    )
    limit = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    decoding = serializers.DictField(
        required=False,
        help_text="max_new_tokens (1..4096), temperature (≥ 0, 0 = greedy), top_p (0..1], "
        "seed, batch_size (1..256).",
    )


class GenerationJobMultipartSerializer(serializers.Serializer):
    """The same fields as form values: ``targets``, ``decoding`` and ``prompts`` as JSON text."""

    targets = serializers.CharField(help_text='JSON: [{"base_model": "tiny", "adapter": 3}]')
    source = serializers.ChoiceField(choices=GenerationSource.choices)
    purpose = serializers.ChoiceField(choices=GenerationPurpose.choices, required=False)
    dataset_version = serializers.IntegerField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1)
    decoding = serializers.CharField(required=False, help_text="JSON object.")
    prompts_file = serializers.FileField(
        required=False,
        help_text="For source file: JSONL, a line {prompt|messages, external_id?}.",
    )


class GenerationTargetOutputSerializer(serializers.ModelSerializer):
    base_model = serializers.CharField(source="base_model.name")
    adapter = serializers.IntegerField(source="adapter_id", allow_null=True)

    class Meta:
        model = GenerationTarget
        fields = ["position", "base_model", "adapter", "tag"]


class GenerationJobOutputSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    dataset_version = serializers.IntegerField(source="dataset_version_id", allow_null=True)
    # A plain string (as the other job serializers do): JobStatus has the same values as
    # RunStatus, and two components sharing one enum make drf-spectacular warn.
    status = serializers.CharField(
        help_text="queued | running | succeeded | failed | cancelled (JobStatus)."
    )
    progress_percent = serializers.IntegerField()
    created_by = serializers.CharField(source="created_by.username", default=None)
    targets = GenerationTargetOutputSerializer(many=True)

    class Meta:
        model = GenerationJob
        fields = [
            "id", "project", "purpose", "source", "dataset_version", "limit", "decoding",
            "targets", "status", "done", "total", "progress_percent", "new_tokens",
            "tokens_per_s", "error", "log", "cancel_requested", "created_by", "created_at",
            "started_at", "heartbeat_at", "finished_at",
        ]  # fmt: skip


class GenerationOutputSerializer(serializers.ModelSerializer):
    target = serializers.CharField(source="target.tag")
    target_position = serializers.IntegerField(source="target.position")
    item = serializers.IntegerField(source="item_id", allow_null=True)
    candidate = serializers.IntegerField(source="candidate_id", allow_null=True)

    class Meta:
        model = GenerationOutput
        fields = ["index", "target", "target_position", "prompt", "messages", "output",
                  "new_tokens", "item", "candidate"]  # fmt: skip


class OutputsPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = GenerationOutputSerializer(many=True)


class GenerationJobDetailSerializer(GenerationJobOutputSerializer):
    outputs = OutputsPageSerializer(help_text="The answers, by prompt then target; ?page=N.")

    class Meta(GenerationJobOutputSerializer.Meta):
        fields = [*GenerationJobOutputSerializer.Meta.fields, "outputs"]


# --------------------------------------------------------------------------------------------


def resolve_targets(project, targets: list[dict]) -> list[tuple[BaseModel, Adapter | None]]:
    """``[{base_model, adapter}]`` to model rows: a base model by id or name, an adapter of
    ``project`` by id (another project's adapter reads as missing). ValidationError keyed
    ``targets[i].base_model`` / ``targets[i].adapter``."""
    resolved = []
    for i, target in enumerate(targets):
        value = str(target["base_model"]).strip()
        base = base_model_by_reference(value)
        if base is None:
            raise ValidationError({f"targets[{i}].base_model": [f"No base model {value!r}."]})
        adapter = None
        if target.get("adapter") is not None:
            adapter = project_adapter(project, target["adapter"])
            if adapter is None:
                raise ValidationError(
                    {f"targets[{i}].adapter": [f"No adapter {target['adapter']} in this project."]}
                )
        resolved.append((base, adapter))
    return resolved


def resolve_version(project, version_id) -> DatasetVersion | None:
    if version_id is None:
        return None
    version = DatasetVersion.objects.filter(pk=version_id, project=project).first()
    if version is None:
        raise ValidationError(
            {"dataset_version": [f"No dataset version {version_id} in this project."]}
        )
    return version


def _multipart_values(data) -> dict:
    """Form values as the JSON body would have them (JSON text fields parsed)."""
    values = {key: data.get(key) for key in data if key != "prompts_file"}
    for key in ("targets", "decoding", "prompts"):
        if isinstance(values.get(key), str):
            try:
                values[key] = json.loads(values[key])
            except ValueError as exc:
                raise serializers.ValidationError({key: [f"Not valid JSON: {exc}."]}) from None
    for key in ("dataset_version", "limit"):
        if values.get(key) == "":
            values.pop(key)
    return values


class ProjectGenerationJobsApi(APIView):
    """A project's generation jobs, and new ones."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "purpose", str, enum=GenerationPurpose.values, description="Only these jobs."
            )
        ],
        responses=GenerationJobOutputSerializer(many=True),
        description="The project's generation jobs, newest first (managers and admins).",
    )
    def get(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        purpose = request.query_params.get("purpose")
        jobs = selectors.generation_job_list(
            project=project, purposes=[purpose] if purpose else None
        ).select_related("project")
        paginator = Pagination()
        page = paginator.paginate_queryset(jobs, request, self)
        return paginator.get_paginated_response(GenerationJobOutputSerializer(page, many=True).data)

    @extend_schema(
        request={
            "application/json": GenerationJobInputSerializer,
            "multipart/form-data": GenerationJobMultipartSerializer,
        },
        responses={
            201: OpenApiResponse(
                GenerationJobOutputSerializer,
                description="Queued on the inference queue: poll GET /api/v1/generation-jobs/{id}/.",
            ),
            400: OpenApiResponse(
                description="Errors by field: targets[i].adapter, decoding.top_p, "
                "prompts_file (with line numbers), dataset_version…"
            ),
        },
        description="Generate answers with base models and adapters (managers and admins).",
    )
    def post(self, request, slug: str):
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        is_form = (request.content_type or "").startswith(
            ("multipart/", "application/x-www-form-urlencoded")
        )
        values = _multipart_values(request.data) if is_form else request.data
        data = GenerationJobInputSerializer(data=values)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        job = services_generation.generation_job_create(
            project=project,
            targets=resolve_targets(project, v["targets"]),
            source=v["source"],
            purpose=v["purpose"],
            dataset_version=resolve_version(project, v.get("dataset_version")),
            prompts=v.get("prompts"),
            prompts_file=request.FILES.get("prompts_file"),
            limit=v.get("limit"),
            decoding=v.get("decoding"),
            created_by=request.user,
        )
        return Response(GenerationJobOutputSerializer(job).data, status=status.HTTP_201_CREATED)


class GenerationJobDetailApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("page", int, description="Page of outputs.")],
        responses=GenerationJobDetailSerializer,
    )
    def get(self, request, job_id: int):
        job = get_generation_job_for_user(request.user, job_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.generation_job_outputs(job=job), request, self)
        body = GenerationJobOutputSerializer(job).data
        body["outputs"] = {
            "count": paginator.page.paginator.count,
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
            "results": GenerationOutputSerializer(page, many=True).data,
        }
        return Response(body)


class GenerationJobCancelApi(APIView):
    @extend_schema(
        request=None,
        responses={
            200: GenerationJobOutputSerializer,
            400: OpenApiResponse(description="The job has already ended."),
        },
        description="Cancel: a queued job at once, a running one after its current batch.",
    )
    def post(self, request, job_id: int):
        job = get_generation_job_for_user(request.user, job_id)
        job = services_generation.generation_job_cancel(job=job)
        return Response(GenerationJobOutputSerializer(job).data)
