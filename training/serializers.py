"""DRF serializers for dataset versions. The input serializer checks shapes and types only;
every rule (ranges, label answers against the schema, an empty selection) is the service's,
so the API, the page and the command refuse the same things with the same messages."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from feedback.models import OutcomeSource
from training.models import DatasetKind, DatasetVersion


class DatasetBuildInputSerializer(serializers.Serializer):
    """A build request. Every field is optional; a missing one takes its default."""

    kinds = serializers.ListField(
        child=serializers.ChoiceField(choices=DatasetKind.choices),
        required=False,
        help_text="Default: all three.",
    )
    eval_fraction = serializers.FloatField(
        required=False, help_text="0 to 0.5 (default 0.1); the split is by prompt."
    )
    seed = serializers.IntegerField(required=False, help_text="Default 0.")
    outcomes = serializers.ListField(
        child=serializers.CharField(),  # "accepted" / "rejected", checked by the service
        required=False,
        help_text='Final outcomes to take (default ["accepted"]: agreed or adjudicated).',
    )
    sources = serializers.ListField(
        child=serializers.ChoiceField(choices=OutcomeSource.choices),
        required=False,
        help_text="How the outcome was reached (default: any).",
    )
    min_agreement = serializers.FloatField(required=False, allow_null=True)
    date_from = serializers.DateField(
        required=False, allow_null=True, help_text="Decided on or after this day."
    )
    date_to = serializers.DateField(
        required=False, allow_null=True, help_text="Decided on or before this day."
    )
    models = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Items with an output from these models.",
    )
    labels = serializers.DictField(
        required=False,
        help_text="{question key: answer}: items where a counted review gave that answer.",
    )
    gold = serializers.ChoiceField(choices=["include", "exclude", "only"], required=False)
    dedup = serializers.BooleanField(
        required=False, help_text="Drop duplicate rows (default true)."
    )
    min_edit_chars = serializers.IntegerField(
        required=False,
        help_text="Non-whitespace characters a correction must change to make a preference "
        "pair (default 1: more than whitespace; 0: any change).",
    )
    system_prompt = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class DatasetFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    split = serializers.CharField()
    rows = serializers.IntegerField()
    bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    url = serializers.CharField()
    lineage = serializers.DictField()


class DatasetVersionOutputSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    # Plain strings in the schema: their enum names would collide with imports' fields.
    status = serializers.CharField(read_only=True, help_text="queued, running, succeeded or failed")
    format = serializers.CharField(
        read_only=True, help_text="standard or conversational (empty until built)"
    )
    files = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "project",
            "status",
            "kinds",
            "params",
            "format",
            "items_total",
            "items_done",
            "phase",
            "row_counts",
            "rows_total",
            "size_bytes",
            "content_sha256",
            "error",
            "created_by",
            "created_via",
            "created_at",
            "started_at",
            "finished_at",
            "files",
        ]
        read_only_fields = fields

    def get_files(self, version) -> list[dict]:
        def url(name: str) -> str:
            return reverse("api:dataset-file", args=[version.pk, name])

        return [
            {
                **entry,
                "url": url(entry["name"]),
                "lineage": {**entry["lineage"], "url": url(entry["lineage"]["name"])},
            }
            for entry in version.files
        ]


class DatasetVersionDetailSerializer(DatasetVersionOutputSerializer):
    class Meta(DatasetVersionOutputSerializer.Meta):
        fields = [*DatasetVersionOutputSerializer.Meta.fields, "manifest"]
        read_only_fields = fields
