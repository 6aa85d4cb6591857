"""Alert webhooks: where a project's drift alerts go, and their signed delivery.

A delivery is one ``POST`` of the alert as JSON (``alert_document``) to the project's
webhook URL with:

- ``Content-Type: application/json``
- ``X-Redline-Event: drift.alert``
- ``X-Redline-Delivery: <alert id>`` (the same on every retry: receivers dedupe on it)
- ``X-Redline-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes, keyed with the
  project's webhook secret.

Delivery runs in the ``feedback.alert_deliver`` task (queued after commit, so nothing a user
does ever waits for it), with a ``WEBHOOK_TIMEOUT_S`` timeout, no redirects followed and no
proxy. A 2xx answer marks the alert delivered; anything else records the error and the
attempt on the alert, and the task retries with backoff. At least once: a receiver may see
an alert twice.

The URL is checked where it is saved (http or https) and again before every delivery: unless
``settings.REDLINE_WEBHOOK_ALLOW_PRIVATE`` is true, a host that resolves to a loopback,
private, link-local or otherwise non-public address is refused, so a manager cannot point
Redline's workers at internal services.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from curation.models import Project
from feedback.models import AlertWebhook, DriftAlert

WEBHOOK_TIMEOUT_S = 5
SIGNATURE_HEADER = "X-Redline-Signature"
MAX_URL = 500
MAX_ERROR = 1000


class DeliveryFailed(Exception):
    pass


# ---- Configuration --------------------------------------------------------------------------


def _url_validate(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValidationError({"url": "Give the webhook URL."})
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValidationError({"url": f"At most {MAX_URL} characters."})
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ValidationError({"url": "Give an http:// or https:// URL."}) from None
    return url


@transaction.atomic
def alert_webhook_set(*, project: Project, url: str, actor) -> AlertWebhook:
    """Set the project's webhook URL; the first time, a secret is generated (kept when the
    URL changes later). The caller has checked that ``actor`` manages the project."""
    url = _url_validate(url)
    webhook = AlertWebhook.objects.select_for_update().filter(project=project).first()
    if webhook is None:
        webhook = AlertWebhook(project=project, secret=secrets.token_hex(32))
    webhook.url = url
    webhook.updated_by = actor
    webhook.updated_at = timezone.now()
    webhook.save()
    return webhook


@transaction.atomic
def alert_webhook_rotate_secret(*, project: Project, actor) -> AlertWebhook | None:
    """A new secret for the project's webhook (None when it has none). Receivers must switch
    to the new secret: deliveries from now on are signed with it."""
    webhook = AlertWebhook.objects.select_for_update().filter(project=project).first()
    if webhook is None:
        return None
    webhook.secret = secrets.token_hex(32)
    webhook.updated_by = actor
    webhook.updated_at = timezone.now()
    webhook.save(update_fields=["secret", "updated_by", "updated_at"])
    return webhook


def alert_webhook_clear(*, project: Project, actor) -> bool:
    """Remove the project's webhook; alerts still appear in Redline. True if one existed."""
    deleted, _ = AlertWebhook.objects.filter(project=project).delete()
    return bool(deleted)


# ---- The document and its signature ---------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def alert_document(alert: DriftAlert) -> dict[str, Any]:
    """The alert as the webhook receives it and the API lists it (JSON-ready)."""
    project = alert.project
    return {
        "id": alert.pk,
        "project": project.slug,
        "model": alert.model,
        "metric": alert.metric,
        "window": {"start": _iso(alert.window_start), "end": _iso(alert.window_end)},
        "baseline": {"start": _iso(alert.baseline_start), "end": _iso(alert.baseline_end)},
        "baseline_value": alert.baseline_value,
        "current_value": alert.current_value,
        "baseline_n": alert.baseline_n,
        "current_n": alert.current_n,
        "statistic": alert.statistic,
        "p_value": alert.p_value,
        "details": alert.details,
        "message": alert.message,
        "created_at": _iso(alert.created_at),
        "monitoring_path": reverse("feedback:monitoring", args=[project.slug]),
    }


def alert_body(alert: DriftAlert) -> bytes:
    """The exact bytes POSTed (and signed): ``{"event": "drift.alert", "alert": {...}}``."""
    document = {"event": "drift.alert", "alert": alert_document(alert)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def webhook_signature(*, secret: str, body: bytes) -> str:
    """The ``X-Redline-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---- Delivery -------------------------------------------------------------------------------


def alert_delivery_queue(*, alert: DriftAlert) -> None:
    """Queue the alert's webhook delivery once the surrounding transaction commits (at once
    outside one); nothing when the project has no webhook."""
    from feedback.tasks import alert_deliver_task

    if AlertWebhook.objects.filter(project_id=alert.project_id).exists():
        alert_deliver_task.delay_on_commit(alert.pk)


def webhook_destination_check(url: str) -> None:
    """Refuse a webhook URL that is not http(s) with a host, or (unless
    ``REDLINE_WEBHOOK_ALLOW_PRIVATE``) whose host resolves to a non-public address. Raises
    ``DeliveryFailed`` saying why. Run it before every ``webhook_post``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryFailed("The webhook URL must be http:// or https:// with a host.")
    if settings.REDLINE_WEBHOOK_ALLOW_PRIVATE:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port)}
    except OSError as exc:
        raise DeliveryFailed(f"Cannot resolve {parts.hostname}: {exc}") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise DeliveryFailed(
                f"{parts.hostname} resolves to a non-public address ({ip}); refused "
                "(REDLINE_WEBHOOK_ALLOW_PRIVATE)."
            )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a 3xx becomes an HTTPError: redirects are not followed


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def webhook_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body`` to ``url`` (no proxy, no redirects, ``WEBHOOK_TIMEOUT_S``); the HTTP
    status. Raises ``DeliveryFailed`` for an HTTP error or an unreachable host."""
    # The scheme is http or https: webhook_destination_check runs first.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with _opener.open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read(64 * 1024)
            return response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code} from the webhook") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"Could not reach the webhook: {reason}") from None


def alert_deliver(*, alert_id: int) -> bool:
    """POST one alert to its project's webhook; True once it is delivered.

    Never raises for a delivery problem: it is recorded on the alert (``delivery_error``,
    ``delivery_attempts``) and False is returned, so the caller (the task) may retry. An
    alert already delivered, gone, or whose project has no webhook returns at once (True for
    delivered, False otherwise).
    """
    alert = DriftAlert.objects.select_related("project").filter(pk=alert_id).first()
    if alert is None:
        return False
    if alert.delivered_at is not None:
        return True
    webhook = AlertWebhook.objects.filter(project_id=alert.project_id).first()
    if webhook is None:
        return False
    body = alert_body(alert)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Redline-Webhook/1",
        "X-Redline-Event": "drift.alert",
        "X-Redline-Delivery": str(alert.pk),
        SIGNATURE_HEADER: webhook_signature(secret=webhook.secret, body=body),
    }
    attempts = alert.delivery_attempts + 1
    try:
        webhook_destination_check(webhook.url)
        status = webhook_post(webhook.url, body, headers)
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status} from the webhook")
    except DeliveryFailed as exc:
        DriftAlert.objects.filter(pk=alert.pk).update(
            delivery_attempts=attempts, delivery_error=str(exc)[:MAX_ERROR]
        )
        return False
    DriftAlert.objects.filter(pk=alert.pk).update(
        delivery_attempts=attempts, delivery_error="", delivered_at=timezone.now()
    )
    return True
