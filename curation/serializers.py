from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from curation.models import (
    GuidelineVersion,
    ImportJob,
    Item,
    ItemStatus,
    Membership,
    OutcomeRule,
    Project,
    ReviewMode,
    Role,
)


class ProjectOutputSerializer(serializers.ModelSerializer):
    role = serializers.CharField(source="user_role", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = Project
        fields = ["slug", "name", "description", "role", "created_by", "created_at", "updated_at"]
        read_only_fields = fields


class ProjectCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True, default="")


class MemberInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)


class MemberOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]
        read_only_fields = fields


# ---- Project settings and guidelines ------------------------------------------------------


class LabelQuestionSerializer(serializers.Serializer):
    """One question of a label schema (documentation shape; services.settings validates)."""

    key = serializers.SlugField(max_length=64)
    prompt = serializers.CharField()
    type = serializers.ChoiceField(choices=["single_choice", "multiple_choice", "rating", "text"])
    options = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Choice types: 2 or more."
    )
    scale = serializers.IntegerField(
        min_value=2, max_value=10, required=False, help_text="Rating: experts rate 1..scale."
    )
    required = serializers.BooleanField(default=False)


@extend_schema_field(LabelQuestionSerializer(many=True))
class LabelSchemaField(serializers.JSONField):
    """Passes the schema through as parsed JSON so the service can name each bad question."""


class ProjectSettingsOutputSerializer(serializers.ModelSerializer):
    review_modes = serializers.ListField(child=serializers.ChoiceField(choices=ReviewMode.choices))
    label_schema = LabelSchemaField()

    class Meta:
        model = Project
        fields = [
            "review_modes",
            "label_schema",
            "overlap",
            "lease_seconds",
            "blind",
            "outcome_rule",
            "ingest_sample_fraction",
            "ingest_low_confidence_first",
            "updated_at",
        ]
        read_only_fields = fields


class ProjectSettingsInputSerializer(serializers.Serializer):
    """PATCH body: any subset of the settings. Ranges and rules are checked by the service."""

    review_modes = serializers.ListField(
        child=serializers.ChoiceField(choices=ReviewMode.choices), required=False
    )
    label_schema = LabelSchemaField(required=False)
    overlap = serializers.IntegerField(required=False, help_text="Reviews wanted per item, 1..50.")
    lease_seconds = serializers.IntegerField(required=False, help_text="60..86400 seconds.")
    blind = serializers.BooleanField(required=False)
    outcome_rule = serializers.ChoiceField(choices=OutcomeRule.choices, required=False)
    ingest_sample_fraction = serializers.FloatField(
        required=False, help_text="Share of new production records sampled into the queue, 0..1."
    )
    ingest_low_confidence_first = serializers.BooleanField(
        required=False, help_text="Queue sampled records least confident first."
    )


class GuidelineVersionSummarySerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = GuidelineVersion
        fields = ["version", "created_by", "created_at"]
        read_only_fields = fields


class GuidelineVersionOutputSerializer(GuidelineVersionSummarySerializer):
    html = serializers.SerializerMethodField(help_text="The markdown rendered and sanitised.")

    class Meta(GuidelineVersionSummarySerializer.Meta):
        fields = ["version", "text", "html", "created_by", "created_at"]
        read_only_fields = fields

    def get_html(self, obj) -> str:
        from redline.lib.markdown import render_markdown

        return str(render_markdown(obj.text))


class GuidelinesOutputSerializer(serializers.Serializer):
    current = GuidelineVersionOutputSerializer(allow_null=True)
    versions = GuidelineVersionSummarySerializer(many=True)


class GuidelineInputSerializer(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False, allow_blank=True, max_length=200_000)


# ---- Items --------------------------------------------------------------------------------


class ItemFilterInputSerializer(serializers.Serializer):
    """Query parameters of the item list (all optional; dates inclusive, site time zone)."""

    status = serializers.ChoiceField(choices=ItemStatus.choices, required=False)
    model = serializers.CharField(required=False, max_length=200)
    source = serializers.CharField(required=False, max_length=32)
    q = serializers.CharField(
        required=False, max_length=200, help_text="Case-insensitive substring of prompt/output."
    )
    created_from = serializers.DateField(required=False)
    created_to = serializers.DateField(required=False)

    def validate(self, attrs):
        start, end = attrs.get("created_from"), attrs.get("created_to")
        if start and end and start > end:
            raise serializers.ValidationError(
                {"created_to": "created_to must not be before created_from."}
            )
        return attrs


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()


class CandidateOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    output = serializers.CharField(read_only=True)
    model = serializers.CharField(read_only=True)


class ItemOutputSerializer(serializers.ModelSerializer):
    """An item as the browser API shows it: ``prompt`` for text items, ``messages`` for chat
    items (the other key is left out, as in the import contract)."""

    prompt = serializers.CharField(
        required=False, help_text="Present for plain-text items (absent for chat items)."
    )
    messages = ChatMessageSerializer(
        many=True, required=False, help_text="Present for chat items (absent otherwise)."
    )
    candidates = CandidateOutputSerializer(many=True, read_only=True)
    metadata = serializers.DictField(read_only=True)

    class Meta:
        model = Item
        fields = [
            "id",
            "external_id",
            "prompt",
            "messages",
            "candidates",
            "metadata",
            "priority",
            "status",
            "review_count",
            "source",
            "created_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if instance.messages:
            data.pop("prompt", None)
        else:
            data.pop("messages", None)
        return data


class QueueItemSerializer(ItemOutputSerializer):
    """An item as the queue hands it to an expert: what to review, nothing about others."""

    class Meta(ItemOutputSerializer.Meta):
        fields = ["id", "external_id", "prompt", "messages", "candidates", "metadata"]
        read_only_fields = fields


# ---- Imports ------------------------------------------------------------------------------


class ImportErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="Line (JSONL, CSV) or item number (JSON); 0: file.")
    field = serializers.CharField(allow_blank=True)
    message = serializers.CharField()


class ImportJobOutputSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    errors = ImportErrorSerializer(many=True, read_only=True)

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "project",
            "status",
            "format",
            "filename",
            "size_bytes",
            "lines_total",
            "lines_done",
            "imported_count",
            "skipped_count",
            "error_count",
            "errors",
            "message",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class ImportUploadInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="JSONL, CSV or a JSON array of item objects.")
    format = serializers.ChoiceField(
        choices=["jsonl", "csv", "json"],
        required=False,
        allow_blank=True,
        default="",
        help_text="Detected from the file name's extension when left out.",
    )


class ImportItemsInputSerializer(serializers.Serializer):
    items = serializers.ListField(
        child=serializers.JSONField(),
        allow_empty=False,
        max_length=10_000,
        error_messages={
            "max_length": "At most {max_length} items per request; upload a file for larger "
            "imports."
        },
        help_text="Item objects in the import format (at most 10,000); imported at once.",
    )
