"""The monitoring page (managers): per model version and window, the review rates, edit
distance of corrections, label answers and production volume; the drift tests as they stand;
the project's drift alerts; and the alert webhook. Experts get 403, outsiders 404."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from curation.models import Role
from curation.permissions import get_project_for_user
from feedback import monitoring
from feedback.forms_monitoring import MonitoringQueryForm, WebhookForm
from feedback.models import AlertWebhook
from feedback.services import alerts as alert_services

ALERTS_SHOWN = 20


def _render(request, project, *, webhook_form=None, status=200):
    query = MonitoringQueryForm(request.GET or None)
    report = monitoring.monitoring_report(project=project, **query.report_arguments())
    webhook = AlertWebhook.objects.filter(project=project).first()
    context = {
        "project": project,
        "nav": "quality",
        "query": query,
        "report": report,
        "alerts": list(monitoring.alerts_recent(project=project)[:ALERTS_SHOWN]),
        "webhook": webhook,
        "webhook_form": webhook_form
        or WebhookForm(initial={"url": webhook.url if webhook else "", "action": "save"}),
    }
    return render(request, "feedback/monitoring.html", context, status=status)


@login_required
@require_GET
def monitoring_page(request, slug: str):
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    return _render(request, project)


@login_required
@require_POST
def monitoring_webhook(request, slug: str):
    """Save the webhook URL, rotate its secret, or remove it (``action``)."""
    project = get_project_for_user(request.user, slug, role=Role.MANAGER)
    form = WebhookForm(request.POST)
    if form.is_valid():
        action = form.cleaned_data["action"]
        try:
            if action == "save":
                alert_services.alert_webhook_set(
                    project=project, url=form.cleaned_data["url"], actor=request.user
                )
                messages.success(request, "Webhook saved.")
            elif action == "rotate":
                if alert_services.alert_webhook_rotate_secret(project=project, actor=request.user):
                    messages.success(request, "New webhook secret generated.")
                else:
                    messages.info(request, "This project has no webhook.")
            elif alert_services.alert_webhook_clear(project=project, actor=request.user):
                messages.success(request, "Webhook removed.")
            else:
                messages.info(request, "This project has no webhook.")
        except ValidationError as exc:
            for key, errors in exc.message_dict.items():
                form.add_error(key if key in form.fields else None, errors)
        else:
            return redirect("feedback:monitoring", slug=project.slug)
    return _render(request, project, webhook_form=form, status=400)
