"""Every write of the Label Studio interop, and every call to a Label Studio server.

- **Connection** (``connection_set`` / ``connection_test`` / ``connection_delete``): one per
  project; the token never leaves the server.
- **Jobs** (``job_submit`` → Celery ``feedback.labelstudio_job_run`` → ``job_run``): a push,
  a pull or a file import, with progress and a report on its ``LabelStudioJob`` row. A job is
  claimed QUEUED → RUNNING by compare-and-set, so a redelivered task does nothing; jobs of
  one project run one at a time (a PostgreSQL advisory lock). The worker running a job holds
  a second advisory lock, on the job, for as long as it lives: ``job_sweep_orphaned`` (beat,
  ``feedback.labelstudio_sweep_orphaned``) fails RUNNING jobs whose lock nobody holds.
- **Push** creates (or reuses) the Label Studio project with ``mapping.labeling_config``,
  registers the webhook, and imports the items not yet linked, in batches of
  ``PUSH_BATCH``. Before importing it reads back the Label Studio tasks that carry a
  ``redline_item_id`` and re-links any whose link was lost, so re-pushing never duplicates.
- **Pull** reads the project's tasks with their annotations and hands each annotation to
  ``_apply_annotation``: new → ``review_submit`` (after leasing the item to the annotator
  with ``queue_claim_item``, in one transaction), changed → ``review_amend`` (a new
  revision), unchanged → nothing. Problems are collected per task; nothing aborts the rest.
- **File import** (``file_import_run``): a Label Studio JSON export (tasks with annotations)
  becomes items (``import_items_inline``, for tasks Redline did not push) plus reviews,
  through the same ``_apply_task``.
- **Webhook** (``webhook_receive``): checks the connection's secret, enqueues a pull of that
  one task (coalesced with a queued webhook pull of the project).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from curation.models import Candidate, Item, Membership, Project, Role
from curation.services.queue import QueueError, queue_claim_item
from feedback.labelstudio import mapping
from feedback.models import (
    LabelStudioAnnotation,
    LabelStudioConnection,
    LabelStudioJob,
    LabelStudioJobKind,
    LabelStudioJobStatus,
    LabelStudioTask,
    Review,
    UnknownAnnotatorPolicy,
)
from feedback.services import AlreadyDecided, review_amend, review_submit

logger = logging.getLogger(__name__)

PUSH_BATCH = 100
PAGE_SIZE = 100
MAX_REPORTED_ERRORS = 200
# Timeouts, in seconds. Connecting never waits long (an unreachable address or a dropped
# SYN fails in CONNECT_TIMEOUT_S); a job gives a busy server REQUEST_TIMEOUT_S to answer and
# the SDK's 2 retries on refused connections and 5xx; "Test connection" runs inside a web
# request, so it gets TEST_TIMEOUT_S per answer and no retry.
CONNECT_TIMEOUT_S = 5
REQUEST_TIMEOUT_S = 30
TEST_TIMEOUT_S = 10
JOB_MAX_RETRIES = 2
MAX_URL = 500
MAX_TOKEN = 4096
WEBHOOK_HEADER = "X-Redline-Webhook-Secret"
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
ORIGIN_SERVER = "server"
ORIGIN_FILE = "file"
# Advisory-lock namespace ("RDLS"): (class, project id) is held while a job of the project runs.
JOB_LOCK_CLASS = 0x52444C53
# Advisory-lock namespace ("RDLJ"): (class, job id) is held by the database session of the
# worker running the job, taken *before* the job is claimed QUEUED → RUNNING and kept until it
# is finished (also while it waits for JOB_LOCK_CLASS behind another job of the project).
# PostgreSQL releases it when that session ends for any reason, so a RUNNING job whose lock is
# free has lost its worker (see ``job_sweep_orphaned``).
JOB_RUN_LOCK_CLASS = 0x52444C4A
SQLITE_ORPHAN_AFTER = timedelta(hours=6)  # SQLite (the demo) has no advisory locks: go by age


class LabelStudioError(Exception):
    """Label Studio could not be reached or refused a request; the message says which and why
    (never more of the server's answer than its status and short detail)."""


# ---- Talking to Label Studio ---------------------------------------------------------------


def _http_client(*, interactive: bool = False):
    import httpx

    read = TEST_TIMEOUT_S if interactive else REQUEST_TIMEOUT_S
    return httpx.Client(
        timeout=httpx.Timeout(read, connect=CONNECT_TIMEOUT_S), follow_redirects=True
    )


def _client(conn: LabelStudioConnection, *, http=None, interactive: bool = False):
    """The SDK client. ``http`` (an ``httpx.Client`` from ``_http_client``) is closed by the
    caller; without it the client makes its own. Timeouts come from the httpx client (the SDK
    passes none of its own when given one)."""
    from label_studio_sdk import LabelStudio  # the SDK is large: loaded only when used

    return LabelStudio(
        base_url=conn.url,
        api_key=conn.token,
        httpx_client=http if http is not None else _http_client(interactive=interactive),
        max_retries=0 if interactive else JOB_MAX_RETRIES,
    )


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("detail", "validation_errors", "message", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return ""


def _call(what: str, fn, *args, **kwargs):
    """Call the SDK; turn its failures into a ``LabelStudioError`` that names ``what``."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        detail = _detail(exc.body)
        hint = " (check the API token)" if exc.status_code in (401, 403) else ""
        raise LabelStudioError(
            f"{what}: Label Studio answered {exc.status_code}{hint}"
            + (f": {detail}" if detail else ".")
        ) from None
    except httpx.TimeoutException as exc:
        waited = (
            f"did not accept a connection within {CONNECT_TIMEOUT_S} s"
            if isinstance(exc, httpx.ConnectTimeout)
            else "did not answer in time"
        )
        raise LabelStudioError(
            f"{what}: cannot reach Label Studio: it {waited} ({type(exc).__name__}); check the "
            "address and that the server is up."
        ) from None
    except httpx.HTTPError as exc:
        raise LabelStudioError(
            f"{what}: cannot reach Label Studio ({type(exc).__name__}); check the address and "
            "that the server is up."
        ) from None


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj.dict()


# ---- Connection ----------------------------------------------------------------------------


def _url(value: Any, field_name: str, *, required: bool) -> str:
    if value in (None, ""):
        if required:
            raise ValidationError(
                {field_name: "Give the address, e.g. https://labelstudio.example.com."}
            )
        return ""
    if not isinstance(value, str) or len(value.strip()) > MAX_URL:
        raise ValidationError({field_name: f"An http(s) address of at most {MAX_URL} characters."})
    value = value.strip().rstrip("/")
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise ValidationError({field_name: "Give an http:// or https:// address."}) from None
    return value


@transaction.atomic
def connection_set(
    *,
    project: Project,
    actor,
    url: str,
    token: str = "",
    redline_url: str = "",
    unknown_annotators: str = UnknownAnnotatorPolicy.SKIP,
) -> LabelStudioConnection:
    """Create or change the project's connection. An empty ``token`` keeps the stored one
    (pages never show it back). A new connection gets a fresh webhook secret. Changing the
    URL forgets the Label Studio project and webhook (they belong to the old server). The
    caller has checked that ``actor`` manages the project."""
    url = _url(url, "url", required=True)
    redline_url = _url(redline_url, "redline_url", required=False)
    if unknown_annotators not in UnknownAnnotatorPolicy.values:
        raise ValidationError(
            {"unknown_annotators": f"Choose one of {', '.join(UnknownAnnotatorPolicy.values)}."}
        )
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise ValidationError({"token": f"At most {MAX_TOKEN} characters."})
    token = token.strip()
    if token and not re.fullmatch(r"[\x21-\x7e]+", token):
        raise ValidationError({"token": "A token is printable ASCII without spaces."})
    conn = LabelStudioConnection.objects.select_for_update().filter(project=project).first()
    if conn is None:
        if not token:
            raise ValidationError({"token": "Give the Label Studio API token."})
        conn = LabelStudioConnection(project=project, webhook_secret=secrets.token_urlsafe(32))
    elif conn.url != url:
        conn.ls_project_id = None
        conn.ls_webhook_id = None
    conn.url = url
    if token:
        conn.token = token
    conn.redline_url = redline_url
    conn.unknown_annotators = unknown_annotators
    conn.updated_by = actor
    conn.updated_at = timezone.now()
    conn.save()
    return conn


def connection_rotate_secret(*, conn: LabelStudioConnection, actor) -> LabelStudioConnection:
    """A new webhook secret; the webhook is registered again on the next push."""
    conn.webhook_secret = secrets.token_urlsafe(32)
    conn.ls_webhook_id = None
    conn.updated_by, conn.updated_at = actor, timezone.now()
    conn.save(update_fields=["webhook_secret", "ls_webhook_id", "updated_by", "updated_at"])
    return conn


def connection_delete(*, project: Project) -> bool:
    """Forget the connection (links and pulled-annotation records stay, so a new connection
    to the same server does not duplicate anything)."""
    deleted, _ = LabelStudioConnection.objects.filter(project=project).delete()
    return bool(deleted)


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str
    user_email: str = ""
    ls_project_title: str = ""


def connection_test(*, conn: LabelStudioConnection) -> ConnectionCheck:
    """Ask Label Studio who the token belongs to (and whether the linked project is there).
    Runs inside a web request: short timeouts (``CONNECT_TIMEOUT_S``, ``TEST_TIMEOUT_S``) and
    no retry, so an unreachable or stalled server is reported in seconds."""
    try:
        with _http_client(interactive=True) as http:
            client = _client(conn, http=http, interactive=True)
            me = _as_dict(_call("Checking the token", client.users.whoami))
            title = ""
            if conn.ls_project_id:
                title = _as_dict(
                    _call("Reading the linked project", client.projects.get, conn.ls_project_id)
                ).get("title", "")
    except LabelStudioError as exc:
        return ConnectionCheck(ok=False, message=str(exc))
    email = str(me.get("email") or "")
    message = f"Connected to {conn.url} as {email or 'user ' + str(me.get('id'))}."
    if title:
        message += f" Linked project: {title!r} (id {conn.ls_project_id})."
    return ConnectionCheck(ok=True, message=message, user_email=email, ls_project_title=title)


def webhook_url(conn: LabelStudioConnection) -> str:
    """Where Label Studio should send annotation events ('' without ``redline_url``)."""
    from django.urls import reverse

    if not conn.redline_url:
        return ""
    path = reverse("api:labelstudio-webhook", args=[conn.project.slug])
    return conn.redline_url.rstrip("/") + path


# ---- Jobs ----------------------------------------------------------------------------------


class _Report:
    """What a job did: counts, the first ``MAX_REPORTED_ERRORS`` per-task problems, and the
    annotators it could not match."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0
        self.unknown: dict[str, str] = {}

    def error(self, message: str, *, task=None, annotation=None, item=None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(
                {"task": task, "annotation": annotation, "item": item, "message": message}
            )


def job_submit(
    *,
    project: Project,
    kind: str,
    created_by=None,
    scope: Any = None,
    trigger: str = "manual",
) -> LabelStudioJob:
    """Create a queued job and run it on a worker after commit. ``scope``: item ids to push,
    Label Studio task ids to pull, or ``{"path", "filename"}`` for a file import."""
    from feedback.labelstudio.tasks import labelstudio_job_run_task

    if kind in (LabelStudioJobKind.PUSH, LabelStudioJobKind.PULL):
        conn = LabelStudioConnection.objects.filter(project=project).first()
        if conn is None:
            raise ValidationError({"detail": "Connect this project to Label Studio first."})
        if kind == LabelStudioJobKind.PULL and not conn.ls_project_id:
            raise ValidationError({"detail": "Push items first: no Label Studio project yet."})
    with transaction.atomic():
        job = LabelStudioJob.objects.create(
            project=project,
            kind=kind,
            scope=scope if scope is not None else [],
            trigger=trigger,
            created_by=created_by,
            created_at=timezone.now(),
        )
        labelstudio_job_run_task.delay_on_commit(job.pk)
    return job


def job_run(*, job_id: int) -> LabelStudioJob | None:
    """Run a queued job; a second call (a redelivered task) does nothing and returns None.
    Not to be called inside a transaction: progress is written as it goes.

    The job's advisory lock (``JOB_RUN_LOCK_CLASS``) is taken before the claim and held until
    the end, so a RUNNING job always has a live holder unless its worker died."""
    with _job_lock(job_id) as mine:
        if not mine:
            return None  # another live worker holds this job (a redelivered message)
        now = timezone.now()
        claimed = LabelStudioJob.objects.filter(
            pk=job_id, status=LabelStudioJobStatus.QUEUED
        ).update(status=LabelStudioJobStatus.RUNNING, started_at=now)
        if not claimed:
            return None
        return _job_run_claimed(job_id)


def _job_run_claimed(job_id: int) -> LabelStudioJob:
    job = LabelStudioJob.objects.select_related("project").get(pk=job_id)
    report = _Report()
    started = time.monotonic()
    status, message = LabelStudioJobStatus.SUCCEEDED, ""
    try:
        with _project_lock(job):
            if job.kind == LabelStudioJobKind.PUSH:
                message = _push(job, report)
            elif job.kind == LabelStudioJobKind.PULL:
                message = _pull(job, report)
            else:
                message = _file_import(job, report)
    except (LabelStudioError, ValidationError) as exc:
        status = LabelStudioJobStatus.FAILED
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    except Exception as exc:
        logger.exception("Label Studio job %s failed", job.pk)
        status, message = LabelStudioJobStatus.FAILED, f"The job failed: {exc}"
    _progress(
        job,
        status=status,
        message=message,
        counts=dict(report.counts),
        errors=report.errors,
        error_count=report.error_count,
        unknown_annotators=[{"email": e, "action": a} for e, a in sorted(report.unknown.items())],
        finished_at=timezone.now(),
        seconds=round(time.monotonic() - started, 3),
    )
    if job.kind == LabelStudioJobKind.FILE_IMPORT and isinstance(job.scope, dict):
        path = _upload_path(job.scope.get("path", ""))
        if path is not None:
            path.unlink(missing_ok=True)
    return job


def _progress(job: LabelStudioJob, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(job, name, value)
    LabelStudioJob.objects.filter(pk=job.pk).update(**fields)


@contextlib.contextmanager
def _job_lock(job_id: int) -> Iterator[bool]:
    """Hold the job's advisory lock for the block; yields False (and holds nothing) when
    another session holds it. Always True on SQLite, which has no advisory locks."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [JOB_RUN_LOCK_CLASS, job_id])
        (mine,) = cursor.fetchone()
    if not mine:
        yield False
        return
    try:
        yield True
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [JOB_RUN_LOCK_CLASS, job_id])
        except Exception:  # the session is gone, and its locks with it
            logger.warning("Could not release the advisory lock of Label Studio job %s", job_id)


_ORPHAN_MESSAGES = {
    LabelStudioJobKind.PUSH: (
        "Items already pushed stay linked to their Label Studio tasks; push again to send the "
        "rest (nothing is sent twice)."
    ),
    LabelStudioJobKind.PULL: (
        "Annotations already taken stay as reviews; pull again to take the rest (nothing is "
        "taken twice)."
    ),
    LabelStudioJobKind.FILE_IMPORT: (
        "Items and reviews already imported stay; upload the file again to import the rest "
        "(nothing is imported twice)."
    ),
}


def _orphan_message(job: LabelStudioJob) -> str:
    progress = f" after {job.done} of {job.total} tasks" if job.total else ""
    return (
        f"The worker running this {job.get_kind_display().lower()} stopped{progress} before it "
        "finished (killed, out of memory, or its database connection was lost). "
        + _ORPHAN_MESSAGES.get(job.kind, "Start it again.")
    )


def job_sweep_orphaned(*, now=None) -> int:
    """Mark FAILED the RUNNING jobs whose worker died (beat task
    ``feedback.labelstudio_sweep_orphaned``), with a message that says so and what to do,
    and remove a dead file import's upload. Returns how many jobs were failed.

    On PostgreSQL a RUNNING job is orphaned when nobody holds its ``JOB_RUN_LOCK_CLASS`` lock
    (its worker takes it before claiming the job; PostgreSQL frees it when the worker's
    session ends). The sweep holds the lock while it fails the job, so a late redelivery of
    the job cannot claim it in between; the failure itself is a compare-and-set on RUNNING,
    so a job that finished meanwhile is left as it is. On SQLite (no advisory locks) a job is
    orphaned once it has been running for ``SQLITE_ORPHAN_AFTER``."""
    now = now or timezone.now()
    failed = 0
    for job in LabelStudioJob.objects.filter(status=LabelStudioJobStatus.RUNNING).order_by("pk"):
        if connection.vendor != "postgresql":
            if job.started_at is None or job.started_at <= now - SQLITE_ORPHAN_AFTER:
                failed += _fail_orphan(job, now)
            continue
        with _job_lock(job.pk) as free:
            if free:
                failed += _fail_orphan(job, now)
    return failed


def _fail_orphan(job: LabelStudioJob, now) -> int:
    seconds = round((now - job.started_at).total_seconds(), 3) if job.started_at else None
    changed = LabelStudioJob.objects.filter(pk=job.pk, status=LabelStudioJobStatus.RUNNING).update(
        status=LabelStudioJobStatus.FAILED,
        message=_orphan_message(job),
        finished_at=now,
        seconds=seconds,
    )
    if changed:
        logger.warning("Label Studio job %s lost its worker; marked failed", job.pk)
        if job.kind == LabelStudioJobKind.FILE_IMPORT and isinstance(job.scope, dict):
            path = _upload_path(job.scope.get("path", ""))
            if path is not None:
                path.unlink(missing_ok=True)
    return changed


PROJECT_LOCK_POLL_S = 1.0
_WAITING = "Waiting for another Label Studio job of this project to finish."


@contextlib.contextmanager
def _project_lock(job: LabelStudioJob):
    """One job of a project at a time. Polled with ``pg_try_advisory_lock`` rather than a
    blocking ``pg_advisory_lock``: a backend blocked on a lock does not notice that its
    client died, so a worker killed while waiting would keep its job lock (and its job
    RUNNING) until the other job ended; an idle session between tries ends at once."""
    if connection.vendor != "postgresql":
        yield
        return
    project_id, waiting = job.project_id, False
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [JOB_LOCK_CLASS, project_id])
            (taken,) = cursor.fetchone()
        if taken:
            break
        if not waiting:
            waiting = True
            _progress(job, message=_WAITING)
        time.sleep(PROJECT_LOCK_POLL_S)
    if waiting:
        _progress(job, message="")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [JOB_LOCK_CLASS, project_id])


def _connection(job: LabelStudioJob) -> LabelStudioConnection:
    conn = (
        LabelStudioConnection.objects.select_related("project").filter(project=job.project).first()
    )
    if conn is None:
        raise LabelStudioError("This project is not connected to Label Studio any more.")
    return conn


# ---- Push ----------------------------------------------------------------------------------


def _ensure_project(client, conn: LabelStudioConnection) -> int:
    """The linked Label Studio project (its labeling config brought up to date), created on
    the first push."""
    project = conn.project
    config = mapping.labeling_config(
        review_modes=project.review_modes, label_schema=project.label_schema or []
    )
    if conn.ls_project_id:
        current = _as_dict(
            _call(
                "Reading the linked Label Studio project", client.projects.get, conn.ls_project_id
            )
        )
        if current.get("label_config") != config:
            _call(
                "Updating the labeling config",
                client.projects.update,
                conn.ls_project_id,
                label_config=config,
            )
        return conn.ls_project_id
    created = _call(
        "Creating the Label Studio project",
        client.projects.create,
        title=f"Redline: {project.name}"[:50],
        description=f"Items of the Redline project {project.slug!r}, pushed by Redline.",
        label_config=config,
    )
    conn.ls_project_id = created.id
    LabelStudioConnection.objects.filter(pk=conn.pk).update(ls_project_id=created.id)
    return created.id


def _ensure_webhook(client, conn: LabelStudioConnection) -> str:
    """Register Redline's webhook on the Label Studio project (once). Returns a note for the
    report ('' when all is well)."""
    url = webhook_url(conn)
    if not url:
        return "No webhook: set Redline's address (as Label Studio reaches it) to get one."
    hooks = _call("Listing webhooks", client.webhooks.list, project=str(conn.ls_project_id))
    for hook in hooks or []:
        hook = _as_dict(hook)
        if hook.get("url") == url and hook.get("id") == conn.ls_webhook_id:
            return ""
    created = _call(
        "Registering the webhook",
        client.webhooks.create,
        url=url,
        project=conn.ls_project_id,
        send_payload=True,
        send_for_all_actions=False,
        actions=list(WEBHOOK_ACTIONS),
        headers={WEBHOOK_HEADER: conn.webhook_secret},
        is_active=True,
    )
    conn.ls_webhook_id = created.id
    LabelStudioConnection.objects.filter(pk=conn.pk).update(ls_webhook_id=created.id)
    return ""


def _remote_tasks(client, ls_project_id: int, *, fields: str = "all") -> Iterator[dict]:
    pager = _call(
        "Listing Label Studio tasks",
        client.tasks.list,
        project=ls_project_id,
        fields=fields,
        page_size=PAGE_SIZE,
    )
    iterator = iter(pager)
    while True:
        task = _call("Listing Label Studio tasks", next, iterator, None)
        if task is None:
            return
        yield _as_dict(task)


def _relink(client, conn: LabelStudioConnection, report: _Report) -> None:
    """Link back the Label Studio tasks that carry one of this project's item ids but whose
    link row is missing (a push that died between Label Studio's import and our commit)."""
    project = conn.project
    linked = set(
        LabelStudioTask.objects.filter(project=project, origin=ORIGIN_SERVER).values_list(
            "ls_task_id", flat=True
        )
    )
    orphans: dict[int, int] = {}
    for task in _remote_tasks(client, conn.ls_project_id, fields="task_only"):
        data = task.get("data") or {}
        if task.get("id") in linked or data.get(mapping.DATA_PROJECT) != project.slug:
            continue
        item_id = data.get(mapping.DATA_ITEM_ID)
        if isinstance(item_id, int):
            orphans.setdefault(item_id, task["id"])
    if not orphans:
        return
    have = set(
        Item.objects.filter(project=project, pk__in=orphans).values_list("pk", flat=True)
    ) - set(
        LabelStudioTask.objects.filter(
            project=project, origin=ORIGIN_SERVER, item_id__in=orphans
        ).values_list("item_id", flat=True)
    )
    now = timezone.now()
    LabelStudioTask.objects.bulk_create(
        [
            LabelStudioTask(
                project=project,
                item_id=i,
                origin=ORIGIN_SERVER,
                ls_task_id=orphans[i],
                created_at=now,
            )
            for i in sorted(have)
        ],
        ignore_conflicts=True,
    )
    report.counts["relinked"] += len(have)


def _candidates_by_item(item_ids: list[int]) -> dict[int, list[tuple[int, str, str]]]:
    out: dict[int, list[tuple[int, str, str]]] = {i: [] for i in item_ids}
    rows = (
        Candidate.objects.filter(item_id__in=item_ids)
        .order_by("item_id", "position")
        .values_list("item_id", "id", "output", "model")
    )
    for item_id, pk, output, model in rows:
        out[item_id].append((pk, output, model))
    return out


def _push(job: LabelStudioJob, report: _Report) -> str:
    conn = _connection(job)
    project = conn.project
    client = _client(conn)
    ls_project_id = _ensure_project(client, conn)
    note = _ensure_webhook(client, conn)
    _relink(client, conn, report)
    linked = LabelStudioTask.objects.filter(project=project, origin=ORIGIN_SERVER).values("item_id")
    items = Item.objects.filter(project=project).exclude(pk__in=linked).order_by("pk")
    if job.scope:
        wanted = {int(i) for i in job.scope}
        items = items.filter(pk__in=wanted)
        missing = wanted - set(
            Item.objects.filter(project=project, pk__in=wanted).values_list("pk", flat=True)
        )
        for item_id in sorted(missing):
            report.error(f"Item {item_id} is not in this project.", item=item_id)
    item_ids = list(items.values_list("pk", flat=True))
    report.counts["already_pushed"] = (
        len(set(job.scope) - set(item_ids)) if job.scope else linked.count()
    )
    _progress(job, total=len(item_ids), done=0)
    done = 0
    for start in range(0, len(item_ids), PUSH_BATCH):
        batch_ids = item_ids[start : start + PUSH_BATCH]
        candidates = _candidates_by_item(batch_ids)
        batch, order = [], []
        for item in Item.objects.filter(pk__in=batch_ids).order_by("pk"):
            try:
                data = mapping.task_data(
                    item_id=item.pk,
                    project_slug=project.slug,
                    external_id=item.external_id,
                    prompt=item.display_prompt,
                    candidates=[(o, m) for _, o, m in candidates[item.pk]],
                )
            except mapping.MappingError as exc:
                report.error(str(exc), item=item.pk)
                report.counts["not_pushed"] += 1
                continue
            batch.append({"data": data})
            order.append(item.pk)
        if batch:
            answer = _call(
                f"Importing tasks {start + 1}-{start + len(batch_ids)}",
                client.projects.import_tasks,
                ls_project_id,
                request=batch,
                return_task_ids=True,
            )
            task_ids = list(getattr(answer, "task_ids", None) or [])
            if len(task_ids) != len(order):
                raise LabelStudioError(
                    f"Label Studio created {len(task_ids)} tasks for {len(order)} items; "
                    "push again to link them."
                )
            now = timezone.now()
            LabelStudioTask.objects.bulk_create(
                [
                    LabelStudioTask(
                        project=project,
                        item_id=i,
                        origin=ORIGIN_SERVER,
                        ls_task_id=t,
                        created_at=now,
                    )
                    for i, t in zip(order, task_ids, strict=True)
                ]
            )
            report.counts["pushed"] += len(order)
        done += len(batch_ids)
        _progress(job, done=done)
    message = f"Pushed {report.counts['pushed']} items to Label Studio project {ls_project_id}."
    return f"{message} {note}".strip()


# ---- Pull ----------------------------------------------------------------------------------


@dataclass
class _PullContext:
    project: Project
    origin: str
    policy: str
    report: _Report
    emails: dict[int, str] = field(default_factory=dict)  # Label Studio user id → email
    experts: dict[str, Any] = field(default_factory=dict)  # email → user (or None: skipped)


def _pull(job: LabelStudioJob, report: _Report) -> str:
    conn = _connection(job)
    client = _client(conn)
    if not conn.ls_project_id:
        raise LabelStudioError("Push items first: no Label Studio project yet.")
    ctx = _PullContext(
        project=conn.project, origin=ORIGIN_SERVER, policy=conn.unknown_annotators, report=report
    )
    for user in _call("Listing Label Studio users", client.users.list) or []:
        user = _as_dict(user)
        if user.get("id") is not None and user.get("email"):
            ctx.emails[user["id"]] = user["email"]
    links = dict(
        LabelStudioTask.objects.filter(project=conn.project, origin=ORIGIN_SERVER).values_list(
            "ls_task_id", "item_id"
        )
    )
    if job.scope:
        tasks: Iterable[dict] = (
            _fetch_task(client, int(t), conn.ls_project_id, report) for t in job.scope
        )
        _progress(job, total=len(job.scope))
    else:
        _progress(job, total=len(links))
        tasks = _remote_tasks(client, conn.ls_project_id)
    done = 0
    for task in tasks:
        done += 1
        if task is not None:
            item_id = links.get(task.get("id"))
            if item_id is None:
                report.error(
                    "This task was not pushed by Redline to this project (no link to an item).",
                    task=task.get("id"),
                )
                report.counts["tasks_not_ours"] += 1
            else:
                _apply_task(ctx, task=task, item_id=item_id)
        if done % 20 == 0:
            _progress(job, done=done)
    _progress(job, done=done)
    c = report.counts
    return (
        f"{c['created']} new reviews, {c['amended']} amended, {c['unchanged']} unchanged, "
        f"{c['skipped']} skipped, {report.error_count} problems."
    )


def _fetch_task(client, task_id: int, ls_project_id: int, report: _Report) -> dict | None:
    try:
        task = _as_dict(_call(f"Reading task {task_id}", client.tasks.get, str(task_id)))
    except LabelStudioError as exc:
        report.error(str(exc), task=task_id)
        return None
    if task.get("project") not in (None, ls_project_id):
        report.error("This task belongs to another Label Studio project.", task=task_id)
        return None
    return task


def _email_of(annotation: dict, ctx: _PullContext) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        if who.get("email"):
            return str(who["email"])
        who = who.get("id")
    if isinstance(who, int) and who in ctx.emails:
        return ctx.emails[who]
    created = annotation.get("created_username")
    if isinstance(created, str) and "@" in created:
        return created.split(",")[0].strip()
    raise mapping.MappingError("The annotation does not say who made it (no completed_by email).")


def _username_for(email: str) -> str:
    User = get_user_model()
    base = re.sub(r"[^\w.@+-]", "", email)[:140] or "annotator"
    name, n = base, 1
    while User.objects.filter(username=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


class _Skip(Exception):
    """An annotation left out on purpose (an unknown annotator under the skip policy)."""


def _expert_for(email: str, ctx: _PullContext):
    """The Redline user an annotator's email stands for, per the connection's policy."""
    key = email.lower()
    if key in ctx.experts:
        if ctx.experts[key] is None:
            raise _Skip(email)
        return ctx.experts[key]
    try:
        EmailValidator()(email)
    except ValidationError:
        raise mapping.MappingError(f"The annotator's email {email!r} is not valid.") from None
    User = get_user_model()
    user = User.objects.filter(email__iexact=email, is_active=True).order_by("pk").first()
    member = user is not None and (
        user.is_staff or Membership.objects.filter(project=ctx.project, user=user).exists()
    )
    if not member:
        if ctx.policy != UnknownAnnotatorPolicy.CREATE:
            ctx.experts[key] = None
            ctx.report.unknown[email] = "skipped"
            raise _Skip(email)
        with transaction.atomic():
            if user is None:
                user = User(username=_username_for(email), email=email)
                user.set_unusable_password()
                user.save()
            Membership.objects.get_or_create(
                project=ctx.project, user=user, defaults={"role": Role.EXPERT}
            )
        ctx.report.unknown[email] = "added as expert"
    ctx.experts[key] = user
    return user


def _apply_task(ctx: _PullContext, *, task: dict, item_id: int) -> None:
    """Take in every annotation of one task; problems go to the report, never further."""
    item = Item.objects.filter(pk=item_id, project=ctx.project).first()
    task_id = task.get("id")
    if item is None:
        ctx.report.error("The item this task was made from is gone.", task=task_id, item=item_id)
        return
    item.project = ctx.project
    candidates = [
        mapping.CandidateView(id=pk, output=out)
        for pk, out in Candidate.objects.filter(item=item)
        .order_by("position")
        .values_list("id", "output")
    ]
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        ctx.report.error("The task's annotations are not a list.", task=task_id, item=item_id)
        return
    seen: set[int] = set()
    for annotation in annotations:
        annotation_id = annotation.get("id") if isinstance(annotation, dict) else None
        try:
            outcome = _apply_annotation(
                ctx,
                item=item,
                candidates=candidates,
                task_id=task_id,
                annotation=annotation,
                seen=seen,
            )
            ctx.report.counts[outcome] += 1
        except _Skip:
            ctx.report.counts["skipped"] += 1
        except (mapping.MappingError, QueueError, AlreadyDecided) as exc:
            ctx.report.error(str(exc), task=task_id, annotation=annotation_id, item=item.pk)
        except ValidationError as exc:
            ctx.report.error(
                "Redline refused the decision: " + _validation_text(exc),
                task=task_id,
                annotation=annotation_id,
                item=item.pk,
            )


def _validation_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def _apply_annotation(
    ctx: _PullContext,
    *,
    item: Item,
    candidates: list[mapping.CandidateView],
    task_id,
    annotation: Any,
    seen: set[int],
) -> str:
    """One annotation → ``"created"``, ``"amended"`` or ``"unchanged"``; raises for the report."""
    if not isinstance(annotation, dict):
        raise mapping.MappingError("An annotation must be an object.")
    annotation_id = annotation.get("id")
    if isinstance(annotation_id, bool) or not isinstance(annotation_id, int):
        raise mapping.MappingError("The annotation has no id.")
    digest = mapping.result_sha256(annotation)
    record = (
        LabelStudioAnnotation.objects.select_related("review")
        .filter(project=ctx.project, origin=ctx.origin, ls_annotation_id=annotation_id)
        .first()
    )
    if record is not None and record.result_sha256 == digest:
        return "unchanged"
    email = _email_of(annotation, ctx)
    expert = _expert_for(email, ctx)
    if expert.pk in seen:
        raise mapping.MappingError(
            f"{email} has several annotations on this task; Redline keeps one decision per "
            "expert and item, so only the first is taken."
        )
    seen.add(expert.pk)
    decision = mapping.annotation_to_decision(
        annotation, candidates=candidates, label_schema=ctx.project.label_schema or []
    )
    now = timezone.now()
    updated = str(annotation.get("updated_at") or "")[:64]
    if record is not None:
        review = record.review
        if decision.verdict == "skip" or review.verdict == "skip":
            raise mapping.MappingError(
                "A skip cannot be amended (nor a decision turned into a skip) in Redline."
            )
        before = review.revision
        kwargs = decision.as_kwargs()
        kwargs.pop("tie")
        review = review_amend(review=review, editor=review.expert, now=now, **kwargs)
        LabelStudioAnnotation.objects.filter(pk=record.pk).update(
            result_sha256=digest, ls_updated_at=updated, updated_at=now
        )
        return "amended" if review.revision != before else "unchanged"
    existing = Review.objects.filter(item=item, expert=expert).first()
    if existing is not None:
        raise mapping.MappingError(
            f"{email} already decided this item in Redline (review {existing.pk}); the "
            "Label Studio annotation is left out."
        )
    lead_time = annotation.get("lead_time")
    time_spent_ms = (
        int(lead_time * 1000)
        if isinstance(lead_time, int | float) and not isinstance(lead_time, bool) and lead_time >= 0
        else None
    )
    try:
        with transaction.atomic():
            lease = queue_claim_item(item=item, expert=expert, now=now)
            if lease is None:
                raise mapping.MappingError(
                    f"The item has no free place for {email}: it already has the "
                    f"{ctx.project.overlap} review(s) it needs, or every place is leased."
                )
            result = review_submit(
                item=item,
                expert=expert,
                time_spent_ms=time_spent_ms,
                idempotency_key=f"labelstudio:{ctx.origin}:{ctx.project.pk}:{annotation_id}",
                now=now,
                **decision.as_kwargs(),
            )
            LabelStudioAnnotation.objects.create(
                project=ctx.project,
                origin=ctx.origin,
                ls_annotation_id=annotation_id,
                ls_task_id=task_id if isinstance(task_id, int) else 0,
                item=item,
                review=result.review,
                annotator_email=email[:254],
                result_sha256=digest,
                ls_updated_at=updated,
                pulled_at=now,
                updated_at=now,
            )
    except IntegrityError:
        raise mapping.MappingError(
            f"{email} holds another item of this project in Redline's queue right now; "
            "the annotation is taken on the next pull."
        ) from None
    return "created"


# ---- File import ---------------------------------------------------------------------------


def uploads_dir() -> Path:
    return Path(settings.STORAGE_DIR) / "labelstudio"


def _upload_path(relative: str) -> Path | None:
    if not relative:
        return None
    path = (Path(settings.STORAGE_DIR) / relative).resolve()
    return path if path.parent == uploads_dir().resolve() else None


def file_import_submit(
    *, project: Project, created_by, filename: str, chunks: Iterable[bytes], run_now: bool = False
) -> LabelStudioJob:
    """Store an uploaded export file and queue (or, with ``run_now``, run here) its import.
    Raises ``ValidationError`` for a file over ``REDLINE_IMPORT_MAX_BYTES``."""
    limit = settings.REDLINE_IMPORT_MAX_BYTES
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"upload-{secrets.token_hex(8)}.json"
    size = 0
    try:
        with open(target, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ValidationError(
                        {"file": f"The file is larger than the {limit:,}-byte limit."}
                    )
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    scope = {"path": str(target.relative_to(settings.STORAGE_DIR)), "filename": filename[:255]}
    if run_now:
        job = LabelStudioJob.objects.create(
            project=project,
            kind=LabelStudioJobKind.FILE_IMPORT,
            scope=scope,
            trigger="command",
            created_by=created_by,
            created_at=timezone.now(),
        )
        return job_run(job_id=job.pk) or job
    return job_submit(
        project=project, kind=LabelStudioJobKind.FILE_IMPORT, created_by=created_by, scope=scope
    )


def _export_tasks(path: Path) -> list[dict]:
    try:
        with open(path, "rb") as f:
            tasks = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError({"file": f"Not a Label Studio JSON export: {exc}"}) from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise ValidationError({"file": "A Label Studio JSON export is a list of tasks."})
    return tasks


def _new_item_row(task: dict, data: dict) -> dict:
    """The import row (docs/imports.md) for a task Redline did not push; MappingError if the
    task has no prompt or outputs Redline can read."""
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise mapping.MappingError("The task is not one of Redline's and has no text 'prompt'.")
    if isinstance(data.get("output_a"), str) and data["output_a"]:
        outputs = [(data["output_a"], data.get("model_a") or "")]
        if isinstance(data.get("output_b"), str) and data["output_b"]:
            outputs.append((data["output_b"], data.get("model_b") or ""))
    elif isinstance(data.get("output"), str) and data["output"]:
        outputs = [(data["output"], data.get("model") or "")]
    else:
        raise mapping.MappingError(
            "The task has no 'output' (or 'output_a' / 'output_b') text to review."
        )
    external_id = data.get("external_id")
    if not isinstance(external_id, str) or not external_id.strip():
        external_id = f"labelstudio-{task.get('id')}"
    return {
        "external_id": external_id[:255],
        "prompt": prompt,
        "candidates": [{"output": o, "model": m if isinstance(m, str) else ""} for o, m in outputs],
        "metadata": {"labelstudio_task": task.get("id")},
    }


def _file_import(job: LabelStudioJob, report: _Report) -> str:
    from curation.models import ImportStatus
    from curation.services.imports import import_items_inline

    project = job.project
    path = _upload_path((job.scope or {}).get("path", "")) if isinstance(job.scope, dict) else None
    if path is None or not path.is_file():
        raise ValidationError({"file": "The uploaded file is gone; upload it again."})
    tasks = _export_tasks(path)
    _progress(job, total=len(tasks))
    policy = (
        LabelStudioConnection.objects.filter(project=project)
        .values_list("unknown_annotators", flat=True)
        .first()
    ) or UnknownAnnotatorPolicy.SKIP
    ctx = _PullContext(project=project, origin=ORIGIN_FILE, policy=policy, report=report)

    # 1. Which item each task stands for: one Redline pushed (redline_item_id of this
    #    project), one imported from a file before, or a new item to import.
    targets: dict[int, int] = {}  # index in the file → item id
    new_rows: dict[int, dict] = {}
    file_links = dict(
        LabelStudioTask.objects.filter(project=project, origin=ORIGIN_FILE).values_list(
            "ls_task_id", "item_id"
        )
    )
    for n, task in enumerate(tasks):
        task_id = task.get("id") if isinstance(task, dict) else None
        try:
            if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                raise mapping.MappingError(f"Task {n + 1} of the file has no 'data' object.")
            if isinstance(task_id, bool) or not isinstance(task_id, int):
                raise mapping.MappingError(f"Task {n + 1} of the file has no id.")
            data = task["data"]
            item_id = data.get(mapping.DATA_ITEM_ID)
            if item_id is not None:
                if (
                    isinstance(item_id, bool)
                    or not isinstance(item_id, int)
                    or data.get(mapping.DATA_PROJECT) != project.slug
                    or not Item.objects.filter(pk=item_id, project=project).exists()
                ):
                    raise mapping.MappingError(
                        f"The task names Redline item {item_id!r} of project "
                        f"{data.get(mapping.DATA_PROJECT)!r}, which is not an item of this project."
                    )
                targets[n] = item_id
            elif task_id in file_links:
                targets[n] = file_links[task_id]
            else:
                new_rows[n] = _new_item_row(task, data)
        except mapping.MappingError as exc:
            report.error(str(exc), task=task_id)
            report.counts["tasks_not_imported"] += 1

    # 2. New items, through the import service (its rules, its idempotency by external_id).
    if new_rows:
        order = list(new_rows)
        created_by = job.created_by or project.created_by
        imported = import_items_inline(
            project=project, created_by=created_by, items=[new_rows[n] for n in order]
        )
        if imported.status != ImportStatus.SUCCEEDED:
            for problem in imported.errors or []:
                n = order[problem["line"] - 1] if 0 < problem.get("line", 0) <= len(order) else None
                report.error(
                    f"The task's item was refused: {problem.get('field') or 'item'}: "
                    f"{problem['message']}",
                    task=tasks[n].get("id") if n is not None else None,
                )
            raise ValidationError(
                {"file": f"{imported.message} (no item of this file was imported)."}
            )
        report.counts["items_imported"] += imported.imported_count
        by_external = dict(
            Item.objects.filter(
                project=project, external_id__in=[r["external_id"] for r in new_rows.values()]
            ).values_list("external_id", "pk")
        )
        now = timezone.now()
        for n, row in new_rows.items():
            targets[n] = by_external[row["external_id"]]
        LabelStudioTask.objects.bulk_create(
            [
                LabelStudioTask(
                    project=project,
                    item_id=targets[n],
                    origin=ORIGIN_FILE,
                    ls_task_id=tasks[n]["id"],
                    created_at=now,
                )
                for n in new_rows
            ],
            ignore_conflicts=True,
        )

    # 3. Annotations → reviews, task by task.
    for done, (n, item_id) in enumerate(sorted(targets.items()), start=1):
        _apply_task(ctx, task=tasks[n], item_id=item_id)
        if done % 50 == 0:
            _progress(job, done=done)
    _progress(job, done=len(tasks))
    c = report.counts
    return (
        f"{len(tasks)} tasks: {c['items_imported']} new items; {c['created']} new reviews, "
        f"{c['amended']} amended, {c['unchanged']} unchanged, {c['skipped']} skipped, "
        f"{report.error_count} problems."
    )


# ---- Webhook -------------------------------------------------------------------------------


class WebhookRefused(Exception):
    pass


def webhook_receive(*, project_slug: str, secret: str, payload: Any) -> LabelStudioJob | None:
    """Label Studio reports an annotation event: check the connection's secret (raises
    ``WebhookRefused``: the caller answers 403 without saying more) and queue a pull of that
    task. A webhook pull already queued for the project takes the task on instead. Returns
    the job, or None for an event that needs no pull."""
    conn = (
        LabelStudioConnection.objects.select_related("project")
        .filter(project__slug=project_slug)
        .first()
    )
    if (
        conn is None
        or not secret
        or not hmac.compare_digest(conn.webhook_secret.encode(), secret.encode())
    ):
        raise WebhookRefused
    if not isinstance(payload, dict) or payload.get("action") not in WEBHOOK_ACTIONS:
        return None
    task_ids = _webhook_task_ids(payload)
    ls_project = payload.get("project")
    ls_project_id = ls_project.get("id") if isinstance(ls_project, dict) else ls_project
    if not task_ids or (ls_project_id is not None and ls_project_id != conn.ls_project_id):
        return None
    with transaction.atomic():
        queued = (
            LabelStudioJob.objects.select_for_update()
            .filter(
                project=conn.project,
                kind=LabelStudioJobKind.PULL,
                status=LabelStudioJobStatus.QUEUED,
                trigger="webhook",
            )
            .order_by("pk")
            .first()
        )
        if queued is not None:
            queued.scope = sorted(set(queued.scope) | set(task_ids))
            queued.save(update_fields=["scope"])
            return queued
    return job_submit(
        project=conn.project,
        kind=LabelStudioJobKind.PULL,
        scope=sorted(task_ids),
        trigger="webhook",
    )


def _webhook_task_ids(payload: dict) -> set[int]:
    ids: set[int] = set()
    task = payload.get("task")
    if isinstance(task, dict) and isinstance(task.get("id"), int):
        ids.add(task["id"])
    annotations = payload.get("annotations") or []
    if isinstance(payload.get("annotation"), dict):
        annotations = [payload["annotation"], *annotations]
    for annotation in annotations if isinstance(annotations, list) else []:
        if isinstance(annotation, dict):
            t = annotation.get("task")
            t = t.get("id") if isinstance(t, dict) else t
            if isinstance(t, int) and not isinstance(t, bool):
                ids.add(t)
    return ids
