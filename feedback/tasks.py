"""Celery tasks for feedback. Thin: take an id (or nothing), call one service, return quietly."""

from __future__ import annotations

from celery import shared_task

# Retries of a failed webhook delivery: 30 s, 1, 2, 4, 8 and 16 min after the first try.
DELIVERY_RETRIES = 6
DELIVERY_BACKOFF_S = 30


@shared_task(name="feedback.drift_check", acks_late=True, ignore_result=True)
def drift_check_task() -> int:
    """Test every active project's model versions for drift (beat, hourly). Idempotent: an
    alert exists at most once per model, metric and window, however often this runs."""
    from feedback.services.drift import drift_check

    return len(drift_check())


@shared_task(
    name="feedback.alert_deliver",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=DELIVERY_RETRIES,
)
def alert_deliver_task(self, alert_id: int) -> None:
    """POST one drift alert to its project's webhook, retrying with backoff while it fails.
    Failures are recorded on the alert by the service, never raised to whoever queued it."""
    from feedback.models import AlertWebhook, DriftAlert
    from feedback.services.alerts import alert_deliver

    if alert_deliver(alert_id=alert_id):
        return
    alert = DriftAlert.objects.filter(pk=alert_id).values("delivered_at", "project_id").first()
    if alert is None or not AlertWebhook.objects.filter(project_id=alert["project_id"]).exists():
        return  # nothing to deliver to
    if self.request.retries < self.max_retries:
        raise self.retry(countdown=DELIVERY_BACKOFF_S * 2**self.request.retries)


# The Label Studio job task lives in its package; importing it here registers it with workers
# (Celery's autodiscovery reads ``feedback.tasks`` only).
from feedback.labelstudio.tasks import labelstudio_job_run_task  # noqa: E402, F401
