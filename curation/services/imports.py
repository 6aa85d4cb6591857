"""Imports: JSONL, CSV and JSON-array files (or a list of objects) into a project, all or nothing.

How a run goes (``import_job_run``):

1. **Validate and stage, streaming.** The file is read a line (JSONL, CSV) or an object (JSON
   array, through ``ijson``) at a time. Every object is checked against the contract in
   ``docs/imports.md``; each problem becomes ``{line, field, message}``. Valid rows are
   buffered in small chunks and written to two TEMP staging tables: with psycopg 3's
   ``COPY FROM STDIN`` on PostgreSQL, with batched ``executemany`` on SQLite (the demo). Memory
   therefore stays flat whatever the file size. Progress is written between chunks in short
   autocommitted updates, so other connections (the progress bar) see it.
2. **Duplicates inside the file** are found with SQL over the staging table, not a Python set.
3. **If anything was wrong, nothing is imported**: the job fails with the first 100 errors and
   the total count.
4. **Insert**, in ONE transaction: ``INSERT … SELECT … ON CONFLICT DO NOTHING`` into
   ``curation_item`` (an external_id already in the project is skipped and counted, so a
   retried import is harmless), then the candidates of the newly inserted items, then the
   job's final state. A failure leaves no item, no candidate and a job marked failed.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from curation.models import ImportJob, ImportStatus, Project

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "json")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}
MAX_LINE_BYTES = 1024 * 1024  # one JSONL line, CSV line or JSON-array item
MAX_REPORTED_ERRORS = 100
MAX_INLINE_ITEMS = 10_000  # a JSON body posted to the API
MAX_CANDIDATES = 50
MAX_EXTERNAL_ID = 255  # Item.external_id
MAX_MODEL_NAME = 200  # Candidate.model
ROLES = ("system", "user", "assistant")
CSV_REQUIRED = ("external_id", "prompt", "output")
CSV_OPTIONAL = ("model", "metadata", "priority", "messages")
INT32 = 2**31 - 1

# Chunks staged at once: bounded by rows and by bytes so one chunk never holds much memory.
CHUNK_ROWS = 10_000
CHUNK_BYTES = 8 * 1024 * 1024
PROGRESS_EVERY_S = 0.5

# PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded as UTF-8.
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


# ---- Errors ---------------------------------------------------------------------------------


class _Errors:
    """The first ``MAX_REPORTED_ERRORS`` problems, and how many there were in all."""

    def __init__(self) -> None:
        self.first: list[dict[str, Any]] = []
        self.count = 0

    def add(self, line: int, field: str, message: str) -> None:
        self.count += 1
        if len(self.first) < MAX_REPORTED_ERRORS:
            self.first.append({"line": line, "field": field, "message": message})

    def __bool__(self) -> bool:
        return self.count > 0


class _FileProblem(Exception):
    """A problem that stops reading the file (too large, broken JSON array, bad CSV header)."""

    def __init__(self, line: int, field: str, message: str) -> None:
        super().__init__(message)
        self.line, self.field, self.message = line, field, message


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _limit_text(limit: int) -> str:
    if limit >= 1024**3 and limit % 1024**3 == 0:
        return f"{limit // 1024**3} GiB"
    if limit >= 1024**2 and limit % 1024**2 == 0:
        return f"{limit // 1024**2} MiB"
    return f"{limit:,} bytes"


# ---- Reading --------------------------------------------------------------------------------


class _Reader:
    """A binary file read with a running byte count that refuses to go past ``max_bytes``."""

    def __init__(self, raw: BinaryIO, max_bytes: int) -> None:
        self.raw = raw
        self.max_bytes = max_bytes
        self.bytes_read = 0

    def _count(self, data: bytes) -> bytes:
        self.bytes_read += len(data)
        if self.bytes_read > self.max_bytes:
            raise _FileProblem(
                0,
                "",
                f"The file is larger than the {_limit_text(self.max_bytes)} limit "
                "(REDLINE_IMPORT_MAX_BYTES).",
            )
        return data

    def readline(self, limit: int = -1) -> bytes:
        return self._count(self.raw.readline(limit))

    def read(self, size: int = -1) -> bytes:
        return self._count(self.raw.read(size))


class _Utf8CheckingReader(_Reader):
    """For JSON arrays: also checks UTF-8 as bytes go by (ijson's own checks vary by backend)."""

    def __init__(self, raw: BinaryIO, max_bytes: int) -> None:
        super().__init__(raw, max_bytes)
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.newlines = 0

    def read(self, size: int = -1) -> bytes:
        offset = self.bytes_read
        data = super().read(size)
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self.newlines + data.count(b"\n", 0, max(exc.start, 0)) + 1
            raise _FileProblem(
                line, "", f"Not valid UTF-8 (byte offset {offset + max(exc.start, 0)})."
            ) from None
        self.newlines += data.count(b"\n")
        return data


def _drain_line(reader: _Reader) -> None:
    """Skip the rest of an over-long line without holding it."""
    while True:
        rest = reader.readline(MAX_LINE_BYTES)
        if not rest or rest.endswith(b"\n"):
            return


def _too_long(raw: bytes) -> bool:
    return len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n")


_TOO_LONG = f"The line is longer than the {_limit_text(MAX_LINE_BYTES)} limit."


def _iter_jsonl(reader: _Reader, errors: _Errors, progress: Callable[[int], None]):
    """Yield ``(line, object)`` for each non-blank line that parses as JSON."""
    line = 0
    while True:
        raw = reader.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line += 1
        progress(line)
        if _too_long(raw):
            _drain_line(reader)
            errors.add(line, "", _TOO_LONG)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.add(line, "", f"Not valid UTF-8 (byte {exc.start + 1} of the line).")
            continue
        if line == 1 and text.startswith("\ufeff"):
            text = text[1:]
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            errors.add(line, "", f"Not valid JSON: {exc.msg} (column {exc.colno}).")
            continue
        yield line, obj


def _iter_json_array(reader: _Reader, errors: _Errors, progress: Callable[[int], None]):
    """Yield ``(position, object)`` for each element of a top-level JSON array, streamed."""
    import ijson

    head = reader.read(64 * 1024)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped:
        return
    if not stripped.startswith(b"["):
        raise _FileProblem(
            1, "", "A .json import must be a JSON array of objects ([{...}, {...}])."
        )
    stream = io.BufferedReader(_Prepend(head, reader), buffer_size=64 * 1024)
    position = 0
    try:
        for obj in ijson.items(stream, "item", use_float=True):
            position += 1
            progress(position)
            yield position, obj
    except ijson.JSONError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise _FileProblem(
            position + 1, "", f"Not valid JSON after item {position}: {message}"
        ) from None


class _Prepend(io.RawIOBase):
    """A raw stream that yields ``head`` and then the rest of ``reader``."""

    def __init__(self, head: bytes, reader: _Reader) -> None:
        self._head = head
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._reader.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class _CsvState:
    line: int = 0
    last_bad_line: int = 0


def _csv_text_lines(reader: _Reader, errors: _Errors, state: _CsvState, progress):
    while True:
        raw = reader.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        state.line += 1
        progress(state.line)
        if _too_long(raw):
            _drain_line(reader)
            errors.add(state.line, "", _TOO_LONG)
            state.last_bad_line = state.line
            yield "\n"
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.add(state.line, "", f"Not valid UTF-8 (byte {exc.start + 1} of the line).")
            state.last_bad_line = state.line
            yield "\n"
            continue
        if state.line == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield text


def _iter_csv(reader: _Reader, errors: _Errors, progress: Callable[[int], None]):
    """Yield ``(line, object)`` per CSV record; the header is line 1."""
    csv.field_size_limit(MAX_LINE_BYTES + 1)
    state = _CsvState()
    rows = csv.reader(_csv_text_lines(reader, errors, state, progress), strict=True)
    try:
        header = next(rows, None)
        if header is None:
            return
        columns = [name.strip().lower() for name in header]
        for name in columns:
            if name not in CSV_REQUIRED and name not in CSV_OPTIONAL:
                raise _FileProblem(
                    1,
                    name,
                    f"Unknown column {name!r}; the columns are "
                    f"{', '.join(CSV_REQUIRED + CSV_OPTIONAL)}.",
                )
            if columns.count(name) > 1:
                raise _FileProblem(1, name, f"Column {name!r} appears twice.")
        missing = [name for name in CSV_REQUIRED if name not in columns]
        if missing and not ("prompt" in missing and "messages" in columns and len(missing) == 1):
            raise _FileProblem(1, missing[0], f"Missing column {missing[0]!r}.")
        width = len(columns)
        previous_end = rows.line_num
        for record in rows:
            start, previous_end = previous_end + 1, rows.line_num
            if state.last_bad_line >= start or not record:
                continue
            if len(record) != width:
                errors.add(start, "", f"Expected {width} columns, got {len(record)}.")
                continue
            obj = _csv_object(dict(zip(columns, record, strict=True)), start, errors)
            if obj is not None:
                yield start, obj
    except csv.Error as exc:
        raise _FileProblem(state.line, "", f"Not valid CSV: {exc}.") from None


def _csv_object(cells: dict[str, str], line: int, errors: _Errors) -> dict[str, Any] | None:
    """Map a CSV record onto the JSON object shape; empty cells mean "not given"."""
    obj: dict[str, Any] = {
        "external_id": cells["external_id"],
        "output": cells.get("output", ""),
        "model": cells.get("model", ""),
    }
    if cells.get("prompt"):
        obj["prompt"] = cells["prompt"]
    ok = True
    for name in ("metadata", "messages"):
        cell = cells.get(name, "").strip()
        if cell:
            try:
                obj[name] = json.loads(cell)
            except ValueError as exc:
                errors.add(line, name, f"Not valid JSON: {exc.msg} (column {exc.colno}).")
                ok = False
    priority = cells.get("priority", "").strip()
    if priority:
        try:
            obj["priority"] = int(priority)
        except ValueError:
            errors.add(line, "priority", f"Must be an integer, got {priority!r}.")
            ok = False
    return obj if ok else None


def _iter_list(items: Iterable[Any], progress: Callable[[int], None]):
    for position, obj in enumerate(items, start=1):
        progress(position)
        yield position, obj


# ---- Validation -----------------------------------------------------------------------------

_JSON_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _text(value: Any, line: int, field: str, errors: _Errors, *, blank: bool = False):
    """``value`` if it is an acceptable string, else None (with an error recorded)."""
    if type(value) is not str:
        errors.add(line, field, f"Must be a string, got {_type_name(value)}.")
        return None
    if not blank and not value.strip():
        errors.add(line, field, "Must not be empty.")
        return None
    if _BAD_CHARS.search(value):
        errors.add(line, field, "Contains a NUL character or an unpaired surrogate.")
        return None
    return value


def _json_text(value: Any, line: int, field: str, errors: _Errors) -> str | None:
    dumped = _JSON_DUMPS(value)
    if "\\u0000" in dumped or _BAD_CHARS.search(dumped):
        errors.add(line, field, "Contains a NUL character or an unpaired surrogate.")
        return None
    return dumped


def _model_name(value: Any, line: int, field: str, errors: _Errors) -> str | None:
    if value is None:
        return ""
    value = _text(value, line, field, errors, blank=True)
    if value is not None and len(value) > MAX_MODEL_NAME:
        errors.add(line, field, f"Longer than {MAX_MODEL_NAME} characters.")
        return None
    return value


Row = tuple[
    int, str, str, str | None, str, int
]  # line, external_id, prompt, messages, metadata, priority
CandidateRow = tuple[int, str, int, str, str]  # line, external_id, position, output, model


def _validate(obj: Any, line: int, errors: _Errors) -> tuple[Row, list[CandidateRow]] | None:
    """Check one object against the contract; record every problem; return staging rows."""
    if type(obj) is not dict:
        errors.add(line, "", f"Expected a JSON object, got {_type_name(obj)}.")
        return None
    before = errors.count

    external_id = obj.get("external_id")
    if external_id is None:
        errors.add(line, "external_id", "Missing external_id.")
    elif type(external_id) is int:
        external_id = str(external_id)
    else:
        external_id = _text(external_id, line, "external_id", errors)
        if external_id is not None and len(external_id) > MAX_EXTERNAL_ID:
            errors.add(line, "external_id", f"Longer than {MAX_EXTERNAL_ID} characters.")

    prompt, messages = obj.get("prompt"), obj.get("messages")
    prompt_text, messages_json, size = "", None, 0
    if prompt is not None and messages is not None:
        errors.add(line, "messages", "Give either prompt or messages, not both.")
    elif prompt is None and messages is None:
        errors.add(line, "prompt", "Missing prompt or messages: give one of them.")
    elif prompt is not None:
        prompt_text = _text(prompt, line, "prompt", errors) or ""
        size += len(prompt_text)
    elif type(messages) is not list:
        errors.add(line, "messages", f"Must be a list of messages, got {_type_name(messages)}.")
    elif not messages:
        errors.add(line, "messages", "Must hold at least one message.")
    else:
        clean = []
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if type(message) is not dict:
                errors.add(line, where, f"Must be an object, got {_type_name(message)}.")
                continue
            role = message.get("role")
            if role not in ROLES:
                errors.add(
                    line,
                    f"{where}.role",
                    f"Unknown role {role!r}; use one of {', '.join(ROLES)}."
                    if role is not None
                    else "Missing role.",
                )
            content = _text(message.get("content"), line, f"{where}.content", errors, blank=True)
            clean.append({"role": role, "content": content})
        if errors.count == before:
            messages_json = _JSON_DUMPS(clean)
            size += len(messages_json)

    output, candidates = obj.get("output"), obj.get("candidates")
    staged: list[tuple[str, str]] = []
    if output is not None and candidates is not None:
        errors.add(line, "candidates", "Give either output (and model) or candidates, not both.")
    elif output is None and candidates is None:
        errors.add(line, "output", "Missing output or candidates: give one of them.")
    elif output is not None:
        text = _text(output, line, "output", errors)
        model = _model_name(obj.get("model"), line, "model", errors)
        if text is not None and model is not None:
            staged.append((text, model))
    elif type(candidates) is not list:
        errors.add(
            line, "candidates", f"Must be a list of candidates, got {_type_name(candidates)}."
        )
    elif not candidates:
        errors.add(line, "candidates", "Must hold at least one candidate.")
    elif len(candidates) > MAX_CANDIDATES:
        errors.add(line, "candidates", f"At most {MAX_CANDIDATES} candidates per item.")
    else:
        for i, candidate in enumerate(candidates):
            where = f"candidates[{i}]"
            if type(candidate) is not dict:
                errors.add(line, where, f"Must be an object, got {_type_name(candidate)}.")
                continue
            if candidate.get("output") is None:
                errors.add(line, f"{where}.output", "Missing output.")
                continue
            text = _text(candidate["output"], line, f"{where}.output", errors)
            model = _model_name(candidate.get("model"), line, f"{where}.model", errors)
            if text is not None and model is not None:
                staged.append((text, model))

    metadata = obj.get("metadata")
    metadata_json = "{}"
    if metadata is not None and metadata != {}:
        if type(metadata) is not dict:
            errors.add(line, "metadata", f"Must be an object, got {_type_name(metadata)}.")
        else:
            metadata_json = _json_text(metadata, line, "metadata", errors) or "{}"

    priority = obj.get("priority")
    if priority is None:
        priority = 0
    elif type(priority) is not int:
        errors.add(line, "priority", f"Must be an integer, got {_type_name(priority)}.")
    elif not -INT32 - 1 <= priority <= INT32:
        errors.add(line, "priority", "Out of range (a 32-bit integer).")

    if errors.count != before:
        return None
    size += len(metadata_json) + sum(len(t) + len(m) for t, m in staged)
    if size > MAX_LINE_BYTES:
        errors.add(line, "", f"The item is larger than the {_limit_text(MAX_LINE_BYTES)} limit.")
        return None
    row = (line, external_id, prompt_text, messages_json, metadata_json, priority)
    return row, [(line, external_id, pos, text, model) for pos, (text, model) in enumerate(staged)]


# ---- Staging --------------------------------------------------------------------------------


class _Stage:
    """Two TEMP tables on the import's connection. Temp tables are private to their session,
    so fixed names are safe; they are dropped when the run ends."""

    def __init__(self) -> None:
        self.postgres = connection.vendor == "postgresql"
        self._rows: list[Row] = []
        self._cands: list[CandidateRow] = []
        self._bytes = 0
        self.staged = 0

    def create(self) -> None:
        self.drop()
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE import_stage_items (line integer NOT NULL,"
                " external_id text NOT NULL, prompt text NOT NULL, messages text,"
                " metadata text NOT NULL, priority integer NOT NULL)"
            )
            cursor.execute(
                "CREATE TEMP TABLE import_stage_candidates (line integer NOT NULL,"
                " external_id text NOT NULL, position integer NOT NULL, output text NOT NULL,"
                " model text NOT NULL)"
            )

    def drop(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS import_stage_items")
            cursor.execute("DROP TABLE IF EXISTS import_stage_candidates")

    def add(self, row: Row, candidates: list[CandidateRow]) -> bool:
        """Buffer one row; True when the buffer is full and should be flushed."""
        self._rows.append(row)
        self._cands.extend(candidates)
        self._bytes += len(row[2]) + len(row[4]) + (len(row[3]) if row[3] else 0)
        self._bytes += sum(len(c[3]) for c in candidates)
        return len(self._rows) >= CHUNK_ROWS or self._bytes >= CHUNK_BYTES

    def flush(self) -> None:
        if not self._rows:
            return
        with connection.cursor() as cursor:
            if self.postgres:
                with cursor.copy(
                    "COPY import_stage_items (line, external_id, prompt, messages, metadata,"
                    " priority) FROM STDIN"
                ) as copy:
                    for row in self._rows:
                        copy.write_row(row)
                with cursor.copy(
                    "COPY import_stage_candidates (line, external_id, position, output, model)"
                    " FROM STDIN"
                ) as copy:
                    for cand in self._cands:
                        copy.write_row(cand)
            else:
                cursor.executemany(
                    "INSERT INTO import_stage_items VALUES (%s, %s, %s, %s, %s, %s)", self._rows
                )
                cursor.executemany(
                    "INSERT INTO import_stage_candidates VALUES (%s, %s, %s, %s, %s)",
                    self._cands,
                )
        self.staged += len(self._rows)
        self._rows, self._cands, self._bytes = [], [], 0

    def duplicates(self, errors: _Errors) -> None:
        """Record every repeat of an external_id inside the file (SQL, not a Python set)."""
        with connection.cursor() as cursor:
            if self.postgres:
                # Temp tables are never auto-analyzed; the plans below need row counts.
                cursor.execute("ANALYZE import_stage_items")
                cursor.execute("ANALYZE import_stage_candidates")
            cursor.execute("SELECT COUNT(*) - COUNT(DISTINCT external_id) FROM import_stage_items")
            (count,) = cursor.fetchone()
            if not count:
                return
            cursor.execute(
                "SELECT line, external_id, first_line FROM ("
                " SELECT line, external_id,"
                " MIN(line) OVER (PARTITION BY external_id) AS first_line"
                " FROM import_stage_items) AS d"
                " WHERE line <> first_line ORDER BY line LIMIT %s",
                [MAX_REPORTED_ERRORS],
            )
            found = [
                {
                    "line": line,
                    "field": "external_id",
                    "message": f"Duplicate external_id {external_id!r} (first on line {first}).",
                }
                for line, external_id, first in cursor.fetchall()
            ]
        errors.first = sorted(errors.first + found, key=lambda e: e["line"])[:MAX_REPORTED_ERRORS]
        errors.count += count

    def insert(self, *, project_id: int, job_id: int) -> tuple[int, int]:
        """Insert staged items that are new to the project, then their candidates. Returns
        ``(items inserted, candidates inserted)``. Call inside ``transaction.atomic``."""
        json_cast = "::jsonb" if self.postgres else ""
        sql, params = _item_insert_sql(
            given={
                "project": ("%s", project_id),
                "external_id": ("external_id", None),
                "prompt": ("prompt", None),
                "messages": (f"messages{json_cast}", None),
                "metadata": (f"metadata{json_cast}", None),
                "priority": ("priority", None),
                "source": ("%s", "import"),
                "import_job": ("%s", job_id),
            },
            now=timezone.now(),
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            items = cursor.rowcount
            cursor.execute(
                "INSERT INTO curation_candidate (item_id, position, output, model)"
                " SELECT i.id, c.position, c.output, c.model FROM import_stage_candidates c"
                " JOIN curation_item i ON i.project_id = %s AND i.external_id = c.external_id"
                " WHERE i.import_job_id = %s",
                [project_id, job_id],
            )
            candidates = cursor.rowcount
        return items, candidates


def _item_insert_sql(*, given: dict[str, tuple[str, Any]], now) -> tuple[str, list[Any]]:
    """``INSERT INTO curation_item … SELECT … FROM import_stage_items`` naming every column
    of ``Item``: the staged ones, the ones in ``given`` and, for the rest, the field's default
    (so a column added to ``Item`` with a default needs no change here).

    "WHERE true" lets SQLite parse ON CONFLICT after INSERT … SELECT. Rows whose external_id
    is already in the project (or was just committed by a concurrent import) are skipped;
    the cursor's rowcount is the number actually inserted.
    """
    from curation.models import Item

    columns, values, params = [], [], []
    for model_field in Item._meta.concrete_fields:
        if model_field.primary_key:
            continue
        columns.append(connection.ops.quote_name(model_field.column))
        if model_field.name in given:
            expression, value = given[model_field.name]
            values.append(expression)
            if expression == "%s":
                params.append(value)
            continue
        if getattr(model_field, "auto_now_add", False) or getattr(model_field, "auto_now", False):
            value = now
        elif model_field.has_default() or model_field.null:
            value = model_field.get_default()
        else:
            raise RuntimeError(f"Item.{model_field.name} has no default; teach the import it.")
        values.append("%s")
        params.append(model_field.get_db_prep_save(value, connection))
    sql = (
        f"INSERT INTO curation_item ({', '.join(columns)})"  # noqa: S608 (names from the model)
        f" SELECT {', '.join(values)} FROM import_stage_items WHERE true ORDER BY line"
        " ON CONFLICT (project_id, external_id) DO NOTHING"
    )
    return sql, params


# ---- Services -------------------------------------------------------------------------------


def import_format_detect(*, filename: str, format: str = "") -> str:
    """The import format: ``format`` when given, else from the file name's extension."""
    if format:
        if format not in FORMATS:
            raise ValidationError({"format": f"Unknown format {format!r}; use jsonl, csv or json."})
        return format
    detected = EXTENSIONS.get(Path(filename).suffix.lower())
    if detected is None:
        raise ValidationError(
            {
                "format": f"Cannot tell the format of {filename!r} from its extension; "
                "name it .jsonl, .csv or .json, or choose the format."
            }
        )
    return detected


def imports_dir() -> Path:
    return Path(settings.STORAGE_DIR) / "imports"


def _job_file(job: ImportJob) -> Path:
    # Uploads are stored relative to STORAGE_DIR (workers may mount it elsewhere); files
    # imported in place by the management command keep their absolute path.
    return Path(settings.STORAGE_DIR) / job.path


@transaction.atomic
def import_job_create(
    *,
    project: Project,
    created_by,
    filename: str,
    format: str = "",
    chunks: Iterable[bytes] | None = None,
    path: Path | str | None = None,
) -> ImportJob:
    """Create a queued import job for a file.

    Give either ``chunks`` (an upload's ``.chunks()``: streamed to
    ``STORAGE_DIR/imports/<job id>.<format>``, never held whole) or ``path`` (a file on this
    machine, imported in place and left alone). The caller has checked that ``created_by``
    manages ``project``. Raises ``ValidationError`` for an unknown format or a file over
    ``REDLINE_IMPORT_MAX_BYTES``. Does not start the import: see ``import_job_submit`` and
    ``import_job_run``.
    """
    if (chunks is None) == (path is None):
        raise TypeError("Give exactly one of chunks or path.")
    format = import_format_detect(filename=filename, format=format)
    limit = settings.REDLINE_IMPORT_MAX_BYTES
    too_large = ValidationError(
        {"file": f"The file is larger than the {_limit_text(limit)} limit."}
    )
    job = ImportJob.objects.create(
        project=project, created_by=created_by, format=format, filename=filename[:255]
    )
    if path is not None:
        path = Path(path).resolve()
        if not path.is_file():
            raise ValidationError({"file": f"No such file: {path}."})
        size = path.stat().st_size
        if size > limit:
            raise too_large
        job.path, job.size_bytes = str(path), size
    else:
        folder = imports_dir()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{job.pk}.{format}"
        size = 0
        try:
            with open(target, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        job.path, job.size_bytes = str(target.relative_to(settings.STORAGE_DIR)), size
    job.save(update_fields=["path", "size_bytes"])
    return job


def import_job_submit(**kwargs) -> ImportJob:
    """``import_job_create`` with the same arguments, then queue the run on the ``datasets``
    queue once the surrounding transaction commits."""
    from curation.tasks import import_job_run_task

    with transaction.atomic():
        job = import_job_create(**kwargs)
        import_job_run_task.delay_on_commit(job.pk)
    return job


def import_job_run(*, job_id: int, items: Iterable[Any] | None = None) -> ImportJob | None:
    """Validate and import a queued job; safe to call twice (the second call does nothing).

    Takes the job QUEUED → VALIDATING with a compare-and-set, so a redelivered task cannot
    run it again. Returns the finished job, or None when it was gone or already taken.
    ``items`` replaces the file for jobs made by ``import_items_inline``. Must not be called
    inside a transaction that other connections need to see progress through (progress is
    written in short autocommitted updates; the final insert is one ``transaction.atomic``).
    """
    now = timezone.now()
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportStatus.QUEUED).update(
        status=ImportStatus.VALIDATING, started_at=now
    )
    if not claimed:
        return None
    job = ImportJob.objects.select_related("project").get(pk=job_id)
    try:
        _run(job, items)
    except Exception as exc:
        logger.exception("Import job %s failed", job.pk)
        _finish_failed(job, message=f"The import failed and nothing was imported: {exc}")
    job.refresh_from_db()
    return job


@transaction.atomic
def _create_inline_job(*, project: Project, created_by) -> ImportJob:
    return ImportJob.objects.create(
        project=project, created_by=created_by, format="json", filename="(request body)"
    )


def import_items_inline(*, project: Project, created_by, items: list[Any]) -> ImportJob:
    """Import a list of objects (a JSON request body) now, with the same rules as a file.

    At most ``MAX_INLINE_ITEMS`` objects (larger imports go through a file and the queue).
    The caller has checked that ``created_by`` manages ``project``. Returns the finished job.
    """
    if len(items) > MAX_INLINE_ITEMS:
        raise ValidationError(
            {
                "items": f"At most {MAX_INLINE_ITEMS:,} items per request (got {len(items):,}); "
                "upload a file for larger imports."
            }
        )
    job = _create_inline_job(project=project, created_by=created_by)
    return import_job_run(job_id=job.pk, items=items)


def _update(job: ImportJob, **fields) -> None:
    """A short update of the job's progress, committed at once when not in a transaction."""
    for name, value in fields.items():
        setattr(job, name, value)
    ImportJob.objects.filter(pk=job.pk).update(**fields)


def _finish_failed(job: ImportJob, *, message: str, errors: _Errors | None = None) -> None:
    fields: dict[str, Any] = {
        "status": ImportStatus.FAILED,
        "message": message,
        "finished_at": timezone.now(),
        "imported_count": 0,
        "skipped_count": 0,
    }
    if errors is not None:
        fields.update(errors=errors.first, error_count=errors.count)
    _update(job, **fields)


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _run(job: ImportJob, items: Iterable[Any] | None) -> None:
    errors = _Errors()
    limit = settings.REDLINE_IMPORT_MAX_BYTES
    file = None
    if items is None:
        path = _job_file(job)
        size = path.stat().st_size
        if size > limit:
            errors.add(0, "", f"The file is larger than the {_limit_text(limit)} limit.")
            _finish_failed(
                job, message="The file is too large; nothing was imported.", errors=errors
            )
            return
        if job.format != "json":
            _update(job, lines_total=_count_lines(path), size_bytes=size)
        file = open(path, "rb")  # noqa: SIM115 (closed in finally)
    else:
        items = list(items)
        _update(job, lines_total=len(items))

    last_progress = [time.monotonic()]

    def progress(line: int) -> None:
        job.lines_done = line
        if time.monotonic() - last_progress[0] >= PROGRESS_EVERY_S:
            last_progress[0] = time.monotonic()
            _update(job, lines_done=line)

    stage = _Stage()
    try:
        stage.create()
        if items is not None:
            source: Iterator = _iter_list(items, progress)
        else:
            reader_cls = _Utf8CheckingReader if job.format == "json" else _Reader
            reader = reader_cls(file, limit)
            iterate = {"jsonl": _iter_jsonl, "csv": _iter_csv, "json": _iter_json_array}
            source = iterate[job.format](reader, errors, progress)
        seen = 0
        try:
            for line, obj in source:
                seen += 1
                result = _validate(obj, line, errors)
                if result is not None and stage.add(*result):
                    stage.flush()
        except _FileProblem as problem:
            errors.add(problem.line, problem.field, problem.message)
        stage.flush()
        if job.format == "json" or items is not None:
            _update(job, lines_total=job.lines_done)
        _update(job, lines_done=job.lines_done)
        if not errors and not seen:
            errors.add(0, "", "The file is empty: there is nothing to import.")
        stage.duplicates(errors)
        if errors:
            lines = "1 problem" if errors.count == 1 else f"{errors.count:,} problems"
            _finish_failed(job, message=f"{lines} found; nothing was imported.", errors=errors)
            return

        _update(job, status=ImportStatus.IMPORTING)
        with transaction.atomic():
            imported, candidates = stage.insert(project_id=job.project_id, job_id=job.pk)
            skipped = stage.staged - imported
            _update(
                job,
                status=ImportStatus.SUCCEEDED,
                imported_count=imported,
                skipped_count=skipped,
                errors=[],
                error_count=0,
                finished_at=timezone.now(),
                message=(
                    f"Imported {imported:,} items ({candidates:,} candidates); skipped "
                    f"{skipped:,} already in the project."
                ),
            )
    finally:
        if file is not None:
            file.close()
        try:
            stage.drop()
        except Exception:  # a broken connection has dropped its temp tables already
            logger.warning("Could not drop the staging tables of import %s", job.pk)
    if job.path and _job_file(job).parent == imports_dir():
        _job_file(job).unlink(missing_ok=True)
