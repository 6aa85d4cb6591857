"""Monitoring API: the figures behind the monitoring page, and the project's drift alerts.

Managers and admins of the project (experts 403, outsiders 404). Thin: parse the query →
access check → one selector → output.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from curation.models import Role
from curation.permissions import get_project_for_user
from feedback import monitoring
from feedback.forms_monitoring import MonitoringQueryForm
from feedback.services.alerts import alert_document
from redline.lib.api import Pagination


class RatesSerializer(serializers.Serializer):
    accept = serializers.FloatField(allow_null=True)
    correct = serializers.FloatField(allow_null=True)
    reject = serializers.FloatField(allow_null=True)


class WindowRowSerializer(serializers.Serializer):
    model = serializers.CharField()
    window = serializers.IntegerField(source="index", help_text="0 is the newest window.")
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="Exclusive.")
    received = serializers.IntegerField(help_text="Production records received.")
    sampled = serializers.IntegerField(help_text="Of which sampled into the queue.")
    decisions = serializers.IntegerField()
    accept = serializers.IntegerField()
    correct = serializers.IntegerField()
    reject = serializers.IntegerField()
    rates = serializers.SerializerMethodField()
    edit_distance = serializers.FloatField(
        allow_null=True, help_text="Mean normalised word edit distance of corrections."
    )
    edit_distance_n = serializers.IntegerField(source="edit_n")

    @extend_schema_field(RatesSerializer)
    def get_rates(self, row) -> dict:
        return {"accept": row.accept_rate, "correct": row.correct_rate, "reject": row.reject_rate}


class LabelRowSerializer(serializers.Serializer):
    model = serializers.CharField()
    window = serializers.IntegerField(source="index")
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    n = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())


class LabelTableSerializer(serializers.Serializer):
    key = serializers.CharField()
    prompt = serializers.CharField()
    categories = serializers.ListField(child=serializers.CharField())
    rows = LabelRowSerializer(many=True)


class FindingSerializer(serializers.Serializer):
    model = serializers.CharField()
    metric = serializers.CharField()
    baseline_n = serializers.IntegerField()
    current_n = serializers.IntegerField()
    baseline_value = serializers.FloatField(allow_null=True)
    current_value = serializers.FloatField(allow_null=True)
    statistic = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    significant = serializers.BooleanField()
    note = serializers.CharField(allow_blank=True)
    details = serializers.DictField()


class DriftWindowsSerializer(serializers.Serializer):
    baseline_start = serializers.DateTimeField()
    baseline_end = serializers.DateTimeField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class PolicySerializer(serializers.Serializer):
    window_days = serializers.IntegerField()
    baseline_days = serializers.IntegerField()
    min_n = serializers.IntegerField()
    alpha = serializers.FloatField()


class DriftSerializer(serializers.Serializer):
    policy = PolicySerializer()
    windows = DriftWindowsSerializer()
    tests = FindingSerializer(many=True)


class MonitoringOutputSerializer(serializers.Serializer):
    window_days = serializers.IntegerField()
    rows = WindowRowSerializer(many=True)
    labels = LabelTableSerializer(many=True)
    drift = serializers.SerializerMethodField()

    @extend_schema_field(DriftSerializer)
    def get_drift(self, report) -> dict:
        return {
            "policy": PolicySerializer(report.policy).data,
            "windows": DriftWindowsSerializer(report.drift).data,
            "tests": FindingSerializer(report.findings, many=True).data,
        }


class AlertOutputSerializer(serializers.Serializer):
    """What ``alert_document`` gives (the webhook's ``alert``), plus its delivery state."""

    id = serializers.IntegerField()
    project = serializers.CharField()
    model = serializers.CharField()
    metric = serializers.CharField()
    window = serializers.DictField(child=serializers.DateTimeField())
    baseline = serializers.DictField(child=serializers.DateTimeField())
    baseline_value = serializers.FloatField(allow_null=True)
    current_value = serializers.FloatField(allow_null=True)
    baseline_n = serializers.IntegerField()
    current_n = serializers.IntegerField()
    statistic = serializers.FloatField()
    p_value = serializers.FloatField()
    details = serializers.DictField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()
    monitoring_path = serializers.CharField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    delivery_attempts = serializers.IntegerField()
    delivery_error = serializers.CharField(allow_blank=True)


class ProjectMonitoringApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("window_days", int, description="Window length, 1..90 (7)."),
            OpenApiParameter("windows", int, description="How many windows, 1..52 (8)."),
        ],
        responses=MonitoringOutputSerializer,
    )
    def get(self, request, slug: str):
        """Per model version and window: volume, review rates, edit distance of corrections,
        label answers; and the drift tests of the current window as they stand."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        query = MonitoringQueryForm(request.query_params)
        if not query.is_valid():
            return Response(query.errors, status=400)
        report = monitoring.monitoring_report(project=project, **query.report_arguments())
        return Response(MonitoringOutputSerializer(report).data)


class ProjectAlertsApi(APIView):
    @extend_schema(responses=AlertOutputSerializer(many=True))
    def get(self, request, slug: str):
        """The project's drift alerts, newest first (paginated)."""
        project = get_project_for_user(request.user, slug, role=Role.MANAGER)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            monitoring.alerts_recent(project=project).select_related("project"), request, self
        )
        body = [
            {
                **alert_document(alert),
                "delivered_at": alert.delivered_at,
                "delivery_attempts": alert.delivery_attempts,
                "delivery_error": alert.delivery_error,
            }
            for alert in page
        ]
        return paginator.get_paginated_response(AlertOutputSerializer(body, many=True).data)
