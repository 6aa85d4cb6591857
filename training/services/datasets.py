"""Dataset versions: request, build, delete.

**Request** (``dataset_version_request``): the parameters are checked and normalised, the
selection counted (an empty one is refused), and the request's *fingerprint* computed: the
project, the normalised parameters and a token of the project's decisions
(``selectors.decisions_state``). An existing version with that fingerprint (not failed) is
returned as it is; otherwise a queued row is created (a unique constraint settles two
requests racing) and the build is queued on the ``datasets`` queue after commit.

**Build** (``dataset_version_build``), safe to deliver any number of times:

1. Compare-and-set QUEUED → RUNNING (or retake a RUNNING build whose heartbeat went stale:
   its worker died). Anything else returns at once.
2. In one snapshot of the database (one transaction: REPEATABLE READ on PostgreSQL, a
   deferred read transaction on SQLite) the selected decisions are read in item id order
   from the *decision source* (``sources``): ``COPY (SELECT …) TO STDOUT`` on PostgreSQL
   (which also writes the lineage's JSON for the item's ids and reviews), the ORM in pages
   elsewhere (the SQLite demo); both give the same decisions. The format is one EXISTS
   query; the counts by kind of decision are tallied from the stream. Each decision goes
   through ``mapping`` into rows, written by ``writer`` a block at a time into a temporary
   directory beside the final one; each row's 16-byte hash goes to a spool file. A large
   PostgreSQL build is split by item id with a forked process that reads the same snapshot
   (``parallel``); its rows are appended in order, so the bytes are those of one process.
   Each process holds one decision (or one page of them) at a time, and buffers of fixed
   size.
3. The source sorts the spooled hashes (PostgreSQL in a TEMP table; elsewhere a scratch
   SQLite file, sorted on disk): each kind's sorted distinct hashes go to
   ``rowhashes/<kind>.bin`` (for comparisons), and duplicate rows (same kind, identical
   JSON line) are dropped from the files that have any, keeping the first.
4. The manifest is written, the directory moved into place with one ``os.replace``, and the
   row marked SUCCEEDED (compare-and-set again). Any failure removes the files and marks
   the row FAILED with the error: no partial version is ever visible.

Progress (phase, items done, heartbeat) is written on a second connection, in autocommit,
so the page sees it while the build's transaction is open.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.metadata
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from curation.models import Project
from training import selectors
from training.models import DatasetFormat, DatasetStatus, DatasetVersion
from training.services.mapping import (
    KINDS,
    Decision,
    RowEncoder,
    SummaryTally,
    chat_messages,
    decision_texts,
    item_rows,
    lineage_item_json,
    normalised_prompt,
    split_of,
)
from training.services.parallel import UpperHalf
from training.services.params import params_clean
from training.services.sources import HashIndex, decision_source, selection_count
from training.services.writer import DatasetWriter, append_part

logger = logging.getLogger(__name__)

# Bump when the mapping or the file layout changes: the same decisions may then give
# different bytes, and the manifest says which rules made a version.
DATASET_FORMAT_VERSION = 1
PROGRESS_ROWS = 1000  # items between progress checks (written at most every PROGRESS_EVERY_S)
PROGRESS_EVERY_S = 0.5
FLUSH_EVERY = 250  # items between checks for full write buffers
# Processes a PostgreSQL build is split across. REDLINE_DATASET_BUILD_WORKERS: ``auto``
# (default) adds a second process when the machine has a core to spare (``_spare_core``),
# ``1`` keeps builds in one process, ``2`` always splits (a build worker that owns its cores).
_WORKERS = os.environ.get("REDLINE_DATASET_BUILD_WORKERS", "auto").strip().lower()
if _WORKERS not in ("auto", "1", "2"):
    raise ImproperlyConfigured(
        f"REDLINE_DATASET_BUILD_WORKERS must be auto, 1 or 2, not {_WORKERS!r}."
    )
BUILD_WORKERS = 1 if _WORKERS == "1" else 2
BUILD_WORKERS_ALWAYS = _WORKERS == "2"
PARALLEL_MIN_ITEMS = 20_000  # below this a second process costs more than it saves
STALE_AFTER = timedelta(minutes=5)  # a RUNNING build without a heartbeat for this long died


class BuildRefused(Exception):
    """The build found nothing to write (the message says why)."""


def request_fingerprint(*, project: Project, params: dict[str, Any], state: list[Any]) -> str:
    body = json.dumps(
        {
            "project": project.pk,
            "params": params,
            "decisions": state,
            "format": DATASET_FORMAT_VERSION,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


# ---- Request ---------------------------------------------------------------------------------------


def dataset_version_request(
    *, project: Project, user, params: dict[str, Any], via: str = "web", enqueue: bool = True
) -> tuple[DatasetVersion, bool]:
    """Ask for a dataset version: ``(version, created)``.

    ``params`` as ``params_clean`` takes them. The caller has checked that ``user`` manages
    the project. The same request over the same decisions returns the version already made
    (``created`` False), queued, building or built. An empty selection raises
    ``ValidationError`` (key ``filters``) and saves nothing. A new version is queued for
    the ``datasets`` workers when the surrounding transaction commits (``enqueue`` False:
    the caller builds it itself, as ``manage.py build_dataset`` does).
    """
    from training.tasks import dataset_build_task

    clean = params_clean(project=project, raw=params)
    selected = selection_count(project=project, filters=clean["filters"])
    if not selected:
        raise ValidationError(
            {"filters": "No final decisions match these filters: there is nothing to build."}
        )
    fingerprint = request_fingerprint(
        project=project, params=clean, state=selectors.decisions_state(project=project)
    )

    def existing() -> DatasetVersion | None:
        return (
            DatasetVersion.objects.filter(project=project, fingerprint=fingerprint)
            .exclude(status=DatasetStatus.FAILED)
            .select_related("project", "created_by")
            .first()
        )

    found = existing()
    if found is not None:
        return found, False
    try:
        with transaction.atomic():
            version = DatasetVersion.objects.create(
                project=project,
                kinds=clean["kinds"],
                params=clean,
                eval_fraction=clean["eval_fraction"],
                seed=clean["seed"],
                fingerprint=fingerprint,
                items_total=selected,
                created_by=user if getattr(user, "is_authenticated", False) else None,
                created_via=via,
                created_at=timezone.now(),
            )
            version.storage_path = f"datasets/{version.pk}"
            version.save(update_fields=["storage_path"])
            if enqueue:
                dataset_build_task.delay_on_commit(version.pk)
    except IntegrityError:
        found = existing()
        if found is None:
            raise
        return found, False
    return version, True


# ---- Build -------------------------------------------------------------------------------------------


def datasets_root() -> Path:
    return Path(settings.STORAGE_DIR) / "datasets"


def _code_version() -> str:
    try:
        package = importlib.metadata.version("redline")
    except importlib.metadata.PackageNotFoundError:
        package = "unknown"
    return f"redline {package}, dataset format {DATASET_FORMAT_VERSION}"


class _Progress:
    """Writes phase, items done and the heartbeat from a second connection (autocommit), at
    most every ``PROGRESS_EVERY_S``. Off when the build runs inside someone else's
    transaction (a second connection could not see the row)."""

    def __init__(self, version_id: int, attempt: int, *, enabled: bool):
        self.version_id = version_id
        self.attempt = attempt
        self.enabled = enabled
        self.conn = None
        self.last = 0.0

    def __call__(self, phase: str, items_done: int, *, force: bool = False, **extra: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        if self.conn is None:
            self.conn = connections.create_connection("default")
        sets = ["phase = %s", "items_done = %s", "heartbeat_at = %s"]
        values: list[Any] = [phase, items_done, timezone.now()]
        for column, value in extra.items():
            sets.append(f"{column} = %s")
            values.append(value)
        with self.conn.cursor() as cursor:
            cursor.execute(
                f"UPDATE {DatasetVersion._meta.db_table} SET {', '.join(sets)}"  # noqa: S608
                " WHERE id = %s AND status = %s AND attempts = %s",
                [*values, self.version_id, DatasetStatus.RUNNING, self.attempt],
            )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _claim(version_id: int) -> DatasetVersion | None:
    """QUEUED → RUNNING, or a stale RUNNING retaken; None when someone else has it, it is
    finished, or it is gone."""
    now = timezone.now()
    claimable = Q(status=DatasetStatus.QUEUED) | Q(
        status=DatasetStatus.RUNNING, heartbeat_at__lt=now - STALE_AFTER
    )
    with transaction.atomic():
        version = (
            DatasetVersion.objects.select_for_update(no_key=True)
            .filter(claimable, pk=version_id)
            .first()
        )
        if version is None:
            return None
        version.status = DatasetStatus.RUNNING
        version.attempts += 1
        version.started_at = version.heartbeat_at = now
        version.phase = "starting"
        version.items_done = 0
        version.error = ""
        version.save(
            update_fields=[
                "status",
                "attempts",
                "started_at",
                "heartbeat_at",
                "phase",
                "items_done",
                "error",
            ]
        )
    return DatasetVersion.objects.select_related("project", "created_by").get(pk=version_id)


def dataset_version_build(*, version_id: int) -> DatasetVersion | None:
    """Build a queued version; safe to call again (a second call returns at once).

    Returns the version as it ended (built or failed), or None when there was nothing to
    do. Must not run inside a transaction in production: its snapshot and the progress
    updates need their own (tests may call it inside one; progress is then not written).
    """
    version = _claim(version_id)
    if version is None:
        return None
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / str(version.pk)
    if final.exists():  # left by a build that died between moving its files and saving
        shutil.rmtree(final)
    work = Path(tempfile.mkdtemp(prefix=f".build-{version.pk}-", dir=root))
    progress = _Progress(version.pk, version.attempts, enabled=not connection.in_atomic_block)
    moved = False
    try:
        result = _build_files(version, work, progress)
        manifest = _manifest(version, result)
        (work / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        os.replace(work, final)
        moved = True
        updated = DatasetVersion.objects.filter(
            pk=version.pk, status=DatasetStatus.RUNNING, attempts=version.attempts
        ).update(
            status=DatasetStatus.SUCCEEDED,
            format=result["format"],
            items_total=result["items"],
            items_done=result["items"],
            row_counts=result["counts"],
            rows_total=result["rows_total"],
            size_bytes=result["size_bytes"],
            content_sha256=result["content_sha256"],
            manifest=manifest,
            storage_path=f"datasets/{version.pk}",
            phase="",
            finished_at=timezone.now(),
        )
        if not updated:  # deleted, or retaken by another worker meanwhile
            shutil.rmtree(final, ignore_errors=True)
            return None
    except Exception as exc:
        shutil.rmtree(final if moved else work, ignore_errors=True)
        if isinstance(exc, BuildRefused):
            message = str(exc)
        else:
            logger.exception("dataset version %s failed", version.pk)
            message = f"The build failed: {type(exc).__name__}: {exc}"
        DatasetVersion.objects.filter(
            pk=version.pk, status=DatasetStatus.RUNNING, attempts=version.attempts
        ).update(
            status=DatasetStatus.FAILED, error=message[:5000], phase="", finished_at=timezone.now()
        )
    finally:
        progress.close()
    return (
        DatasetVersion.objects.select_related("project", "created_by").filter(pk=version.pk).first()
    )


_new_decision = tuple.__new__


def _decision(row: tuple) -> Decision:
    """A row of the decision source as a ``Decision``: the portable source's are already;
    a COPY row (``selectors.DECISION_COLUMNS_SHAPED``, in ``Decision`` order, with the
    lineage's JSON in place of the review arrays) has its chat as text (jsonb)."""
    if type(row) is Decision:
        return row
    if row[3] is not None:
        row = list(row)
        row[3] = chat_messages(json.loads(row[3]))
    return _new_decision(Decision, row)


def _spare_core() -> bool:
    """Whether a second process would find a core to run on: the load average over the last
    minute leaves at least one core and a half free. On a machine already busy, a second
    process only adds its own work (the split query, a second sort in PostgreSQL, the merge)
    and takes longer than one; the files are the same bytes either way."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return False
    return load <= (os.cpu_count() or 1) - 1.5


class _Mapper:
    """The per-decision work of a build, the same in every process: count, map, encode, and
    hand each row to its file's ``add``."""

    def __init__(self, params: dict[str, Any], *, conversational: bool):
        options = params["options"]
        self.kinds = frozenset(params["kinds"])
        self.encoder = RowEncoder(
            conversational=conversational, system_prompt=options["system_prompt"]
        )
        self.min_edit = options["min_edit_chars"]
        self.seed = params["seed"]
        self.fraction = params["eval_fraction"]

    def run(
        self,
        rows: Iterator[Any],
        sinks: dict[tuple[str, str], tuple[Any, Any]],
        flush_if_full: Any,
        tally: SummaryTally,
        progress: Any = None,
    ) -> None:
        """Map ``rows``; each row goes to its file's ``sinks`` (data line, lineage tail);
        ``flush_if_full`` is called every ``FLUSH_EVERY`` items."""
        kinds, encoder, min_edit = self.kinds, self.encoder, self.min_edit
        seed, fraction, count = self.seed, self.fraction, tally.add
        gc_was_on = gc.isenabled()
        # The loop allocates a few short-lived objects per row and makes no reference
        # cycles: the cyclic collector would only scan them (about 5% of the time).
        gc.disable()
        try:
            with contextlib.closing(rows) as stream:
                for row in stream:
                    d = _decision(row)
                    count(d)
                    texts = decision_texts(d, min_edit_chars=min_edit)
                    if texts.good or texts.bad:
                        split = split_of(
                            normalised_prompt(d.prompt, d.messages),
                            seed=seed,
                            eval_fraction=fraction,
                        )
                        item = encoder.item(d.prompt, d.messages)
                        tail = "," + lineage_item_json(d, texts.decision) + "}"
                        for kind, line, texts_json in item_rows(texts, item, kinds):
                            data, lineage = sinks[kind, split]
                            data(line)
                            lineage(texts_json + tail)
                    if not tally.total % FLUSH_EVERY:
                        flush_if_full()
                    if progress is not None and not tally.total % PROGRESS_ROWS:
                        progress("writing rows", tally.total)
        finally:
            if gc_was_on:
                gc.enable()


def _build_files(version: DatasetVersion, work: Path, progress: _Progress) -> dict[str, Any]:
    """Stream, map and write; deduplicate; return what the manifest needs.

    On PostgreSQL a large build is split by item id between this process (the lower half)
    and a forked one (the upper half) reading the same snapshot; the upper half's rows are
    appended to the lower half's files in order, so the files are byte for byte those of
    one process (``parallel.py``)."""
    params = version.params
    filters, options = params["filters"], params["options"]
    source = decision_source(project=version.project, filters=filters, name=str(version.pk))
    writer = DatasetWriter(work, params["kinds"], spool=work / "rowhashes.copy")
    tally = SummaryTally()
    helper = None
    with source.snapshot():
        # The format must be known before the first row: one EXISTS query. The counts come
        # from the stream itself (``SummaryTally``), not from a second pass over the selection.
        conversational = source.conversational()
        progress("writing rows", 0, force=True)
        mapper = _Mapper(params, conversational=conversational)
        try:
            split_at = None
            if (
                BUILD_WORKERS > 1
                and (version.items_total or 0) >= PARALLEL_MIN_ITEMS
                and (BUILD_WORKERS_ALWAYS or _spare_core())
            ):
                split_at = source.split_point()
            if split_at is not None:
                helper = UpperHalf.start(source, mapper, split_at, work / "upper")
            lower = (None, split_at) if split_at is not None else ()
            mapper.run(
                source.rows(item_range=lower),
                writer.sinks(),
                writer.flush_if_full,
                tally,
                progress,
            )
            if helper is not None:
                progress("writing rows", tally.total, force=True)
                upper = helper.join()
                helper = None
                tally.merge(upper["tally"])
                for (kind, split), out in writer.outputs.items():
                    append_part(out, work / "upper", upper["rows"][f"{kind}.{split}"])
                shutil.rmtree(work / "upper")
            if not tally.total:
                raise BuildRefused(
                    "No final decisions match these filters any more: nothing was built."
                )
            if conversational != (tally.conversational > 0):  # one snapshot: cannot happen
                raise RuntimeError("The stream and the format query disagree on chats.")
            writer.close()
            items = tally.total
            progress("deduplicating", items, force=True)
            with source.sorted_hashes(writer.spool_path, expected=writer.rows_total) as index:
                dropped = _hash_files_and_dedup(
                    index, writer, work, params["kinds"], dedup=options["dedup"]
                )
        finally:
            if helper is not None:
                helper.kill()
            writer.close()
            writer.spool_path.unlink(missing_ok=True)
    progress("finishing", items, force=True)
    summary = selectors.SelectionSummary(**tally.counts())
    files = writer.finish()
    rows_total = sum(f["rows"] for f in files)
    if rows_total == 0:
        raise BuildRefused(
            f"The {summary.total} selected decisions give no rows for "
            f"{', '.join(params['kinds'])}: preference rows need corrections or comparisons, "
            "SFT rows accepted outputs, KTO rows any decision."
        )
    identity = {
        "dataset_format": DATASET_FORMAT_VERSION,
        "params": params,
        "format": DatasetFormat.CONVERSATIONAL if conversational else DatasetFormat.STANDARD,
        "files": [
            [f["name"], f["sha256"], f["lineage"]["name"], f["lineage"]["sha256"]] for f in files
        ],
    }
    content_sha256 = hashlib.sha256(
        json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return {
        "items": summary.total,
        "summary": summary,
        "format": identity["format"],
        "files": files,
        "counts": writer.counts(),
        "dropped": dropped,
        "rows_total": rows_total,
        "size_bytes": sum(f["bytes"] + f["lineage"]["bytes"] for f in files),
        "content_sha256": content_sha256,
    }


def _hash_files_and_dedup(
    index: HashIndex, writer: DatasetWriter, work: Path, kinds: list[str], *, dedup: bool
) -> dict[str, int]:
    """Write each kind's sorted distinct row hashes; drop duplicate rows (keeping the first
    in file order) when ``dedup``. Returns rows dropped per kind."""
    hashes_dir = work / "rowhashes"
    hashes_dir.mkdir()
    dropped = dict.fromkeys(kinds, 0)
    duplicates = 0
    files = {KINDS.index(k): open(hashes_dir / f"{k}.bin", "wb") for k in kinds}  # noqa: SIM115
    try:
        for kind, hashes, extra in index.distinct_blocks():
            files[kind].write(hashes)
            duplicates += extra
    finally:
        for f in files.values():
            f.close()
    if not dedup or not duplicates:
        return dropped
    for (kind_index, split_index), group in itertools.groupby(
        index.duplicates(), key=lambda r: r[:2]
    ):
        kind = KINDS[kind_index]
        out = writer.outputs[(kind, ("train", "eval")[split_index])]
        dropped[kind] += out.drop_rows(row_no for _, _, row_no in group)
    return dropped


def _manifest(version: DatasetVersion, result: dict[str, Any]) -> dict[str, Any]:
    params = version.params
    summary = result["summary"]
    return {
        "dataset_format": DATASET_FORMAT_VERSION,
        "version": version.pk,
        "project": {
            "id": version.project.pk,
            "slug": version.project.slug,
            "name": version.project.name,
        },
        "kinds": params["kinds"],
        "format": result["format"],
        "filters": params["filters"],
        "seed": params["seed"],
        "eval_fraction": params["eval_fraction"],
        "options": params["options"],
        "decisions": {
            "selected": summary.total,
            "accepted": summary.accepted,
            "corrected": summary.corrected,
            "compared": summary.compared,
            "ties": summary.ties,
            "rejected": summary.rejected,
        },
        "counts": result["counts"],
        "duplicates_dropped": result["dropped"],
        "files": result["files"],
        "content_sha256": result["content_sha256"],
        "code_version": _code_version(),
        "created_by": (
            {"id": version.created_by.pk, "username": version.created_by.get_username()}
            if version.created_by
            else None
        ),
        "created_via": version.created_via,
        "created_at": version.created_at.isoformat(),
        "built_at": timezone.now().isoformat(),
    }


# ---- Delete ----------------------------------------------------------------------------------------


def dataset_version_delete(*, version: DatasetVersion) -> None:
    """Remove a version: its row now, its files once that commits. The caller has checked
    that the actor may (admins). A build still running notices and cleans up after itself."""
    path = datasets_root() / str(version.pk)
    with transaction.atomic():
        DatasetVersion.objects.filter(pk=version.pk).delete()
        transaction.on_commit(lambda: shutil.rmtree(path, ignore_errors=True))
