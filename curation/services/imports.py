"""Imports: JSONL, CSV and JSON-array files (or a list of objects) into a project, all or nothing.

How a run goes (``import_job_run``):

1. **Validate and stage, streaming.** The file is read a line (JSONL, CSV) or an object (JSON
   array, through ``ijson``) at a time. Every object is checked against the contract in
   ``docs/imports.md`` (``_fast_row`` for the plainly valid, ``_validate`` for the rest); each
   problem becomes ``{line, field, message}``. Valid rows go into one TEMP staging table: through
   an open psycopg 3 ``COPY FROM STDIN`` on PostgreSQL, in small ``executemany`` batches on
   SQLite (the demo). Memory therefore stays flat whatever the file size. Progress is written
   every ``PROGRESS_EVERY_S`` in short autocommitted updates (the COPY is ended for them), so
   other connections (the progress bar) see it.
2. **Duplicates inside the file** are found with SQL over the staging table, not a Python set.
3. **If anything was wrong, nothing is imported**: the job fails with the first 100 errors and
   the total count.
4. **Insert**, in ONE transaction: ``INSERT … SELECT … ON CONFLICT DO NOTHING`` into
   ``curation_item`` (an external_id already in the project is skipped and counted, so a
   retried import is harmless), then the candidates of the newly inserted items, then the
   job's final state. Most of an import's time is here and at commit (index maintenance and
   the deferred foreign-key checks, one per item and candidate), work PostgreSQL does on
   one core. A failure leaves no item, no candidate and a job marked failed.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
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


_scan_json = json.JSONDecoder().scan_once


def _iter_jsonl(reader: _Reader, errors: _Errors, progress: Callable[[int], None]):
    """Yield ``(line, object, clean)`` for each non-blank line that parses as JSON; ``clean``
    means the line cannot hold a character PostgreSQL refuses (see ``_fast_row``)."""
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
        if not text or text.isspace():
            continue
        try:
            obj, end = _scan_json(text, 0)  # json.loads without its two regex passes
            if end != len(text) and not text[end:].isspace():
                raise ValueError
        except (StopIteration, ValueError):
            try:  # leading blanks, or an error to report in json.loads's own words
                obj = json.loads(text)
            except ValueError as exc:
                errors.add(line, "", f"Not valid JSON: {exc.msg} (column {exc.colno}).")
                continue
        # Valid JSON decoded from valid UTF-8 can only hold NUL or a lone surrogate through a
        # \u escape (raw control characters are refused by the parser, encoded surrogates by
        # the decoder), so a line without one needs no character checks.
        yield line, obj, b"\\u" not in raw


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
            yield position, obj, False
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
                yield start, obj, False
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
        yield position, obj, False


# ---- Validation -----------------------------------------------------------------------------

# allow_nan=False: Python's json reads NaN and Infinity, but they are not JSON and jsonb refuses
# them; refusing them here gives the line a precise error instead of a failed COPY.
_JSON_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_json_string = json.encoder.encode_basestring  # one str as a JSON string, non-ASCII kept


def _pairs_json(pairs: list[tuple[str, str]]) -> str:
    """``_JSON_DUMPS(pairs)`` for a list of (output, model) strings, without the encoder's
    per-call overhead (this runs once an item)."""
    return (
        "["
        + ",".join(
            ["[" + _json_string(text) + "," + _json_string(model) + "]" for text, model in pairs]
        )
        + "]"
    )


def _text(value: Any, line: int, field: str, errors: _Errors, *, blank: bool = False):
    """``value`` if it is an acceptable string, else None (with an error recorded)."""
    if type(value) is not str:
        errors.add(line, field, f"Must be a string, got {_type_name(value)}.")
        return None
    if not blank and (not value or value.isspace()):
        errors.add(line, field, "Must not be empty.")
        return None
    if _BAD_CHARS.search(value):
        errors.add(line, field, "Contains a NUL character or an unpaired surrogate.")
        return None
    return value


def _json_text(value: Any, line: int, field: str, errors: _Errors) -> str | None:
    try:
        dumped = _JSON_DUMPS(value)
    except ValueError:
        errors.add(line, field, "Not valid JSON: NaN and Infinity are not JSON numbers.")
        return None
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


# A staged item: line, external_id, prompt, messages (JSON text or None), metadata (JSON text),
# priority, candidates (JSON text: a list of [output, model] pairs, in file order).
Row = tuple[int, str, str, str | None, str, int, str]


def _fast_row(obj: Any, line: int, clean: bool) -> Row | None:
    """The staging row of an object that plainly meets the contract, or None.

    The common case, kept cheap: no error bookkeeping, no field paths, no regexes when the
    line is ``clean``. None does not mean the object is bad, only that ``_validate`` (which
    reports every problem precisely) must decide; the two must accept exactly the same rows.
    """
    if type(obj) is not dict:
        return None
    get = obj.get
    external_id = get("external_id")
    if type(external_id) is str:
        if not external_id or len(external_id) > MAX_EXTERNAL_ID or external_id.isspace():
            return None
    elif type(external_id) is int:
        external_id = str(external_id)
    else:
        return None

    prompt, messages = get("prompt"), get("messages")
    if messages is None:
        if type(prompt) is not str or not prompt or prompt.isspace():
            return None
        messages_json = None
        size = len(prompt)
    else:
        if prompt is not None or type(messages) is not list or not messages:
            return None
        for message in messages:
            # Exactly role and content: the careful path would drop any other key.
            if (
                type(message) is not dict
                or len(message) != 2
                or type(message.get("content")) is not str
                or message.get("role") not in ROLES
            ):
                return None
        # Written as _validate writes them (role first), and faster than the encoder.
        messages_json = (
            "["
            + ",".join(
                [
                    '{"role":'
                    + _json_string(m["role"])
                    + ',"content":'
                    + _json_string(m["content"])
                    + "}"
                    for m in messages
                ]
            )
            + "]"
        )
        prompt = ""
        size = len(messages_json)

    output, candidates = get("output"), get("candidates")
    if candidates is None:
        if type(output) is not str or not output or output.isspace():
            return None
        model = get("model")
        if model is None:
            model = ""
        elif type(model) is not str or len(model) > MAX_MODEL_NAME:
            return None
        pairs = [(output, model)]
        size += len(output) + len(model)
    else:
        if output is not None or type(candidates) is not list:
            return None
        if not candidates or len(candidates) > MAX_CANDIDATES:
            return None
        pairs = []
        for candidate in candidates:
            if type(candidate) is not dict:
                return None
            text, model = candidate.get("output"), candidate.get("model")
            if type(text) is not str or not text or text.isspace():
                return None
            if model is None:
                model = ""
            elif type(model) is not str or len(model) > MAX_MODEL_NAME:
                return None
            pairs.append((text, model))
            size += len(text) + len(model)

    metadata = get("metadata")
    if metadata is None or metadata == {}:
        metadata_json = "{}"
    elif type(metadata) is dict:
        try:
            metadata_json = _JSON_DUMPS(metadata)
        except ValueError:  # NaN or Infinity
            return None
    else:
        return None

    priority = get("priority")
    if priority is None:
        priority = 0
    elif type(priority) is not int or not -INT32 - 1 <= priority <= INT32:
        return None

    candidates_json = _pairs_json(pairs)
    if not clean and (
        _BAD_CHARS.search(external_id)
        or _BAD_CHARS.search(prompt)
        or "\\u0000" in metadata_json
        or _BAD_CHARS.search(metadata_json)
        or (
            messages_json is not None
            and ("\\u0000" in messages_json or _BAD_CHARS.search(messages_json))
        )
        or "\\u0000" in candidates_json
        or _BAD_CHARS.search(candidates_json)
    ):
        return None
    if size + len(metadata_json) > MAX_LINE_BYTES:
        return None
    return (line, external_id, prompt, messages_json, metadata_json, priority, candidates_json)


def _validate(obj: Any, line: int, errors: _Errors) -> Row | None:
    """Check one object against the contract; record every problem; return its staging row."""
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
    candidates_json = _pairs_json(staged)
    return (line, external_id, prompt_text, messages_json, metadata_json, priority, candidates_json)


# ---- Staging --------------------------------------------------------------------------------

_STAGE_COLUMNS = "line, external_id, prompt, messages, metadata, priority, candidates"


class _Stage:
    """One TEMP table on the import's connection (private to the session, so a fixed name is
    safe), dropped when the run ends.

    On PostgreSQL rows go straight into an open ``COPY FROM STDIN`` as they are validated, so
    the server parses and stores them (JSON into jsonb included) on its own core while Python
    reads on. The COPY is ended only when the connection is needed for something else (a
    progress update, the end of the file). Each staged row takes its item id from
    ``curation_item``'s own sequence as it arrives: ids follow the file's order without a sort,
    and candidates are inserted from the same row without joining back on external_id.

    On SQLite (the demo) rows are buffered in small chunks and written with ``executemany``.
    """

    def __init__(self) -> None:
        self.postgres = connection.vendor == "postgresql"
        self._rows: list[Row] = []
        self._bytes = 0
        self._copy: Any = None
        self._exit: contextlib.ExitStack | None = None
        self.staged = 0

    def create(self) -> None:
        self.drop()
        with connection.cursor() as cursor:
            if self.postgres:
                cursor.execute("SELECT pg_get_serial_sequence('curation_item', 'id')")
                (sequence,) = cursor.fetchone()
                cursor.execute(
                    "CREATE TEMP TABLE import_stage (line integer NOT NULL,"
                    " id bigint NOT NULL DEFAULT nextval(%s::regclass),"
                    " external_id text NOT NULL, prompt text NOT NULL, messages jsonb,"
                    " metadata jsonb NOT NULL, priority integer NOT NULL,"
                    " candidates jsonb NOT NULL)",
                    [sequence],
                )
            else:
                cursor.execute(
                    "CREATE TEMP TABLE import_stage (line integer NOT NULL,"
                    " external_id text NOT NULL, prompt text NOT NULL, messages text,"
                    " metadata text NOT NULL, priority integer NOT NULL,"
                    " candidates text NOT NULL)"
                )

    def drop(self) -> None:
        self._end_copy(failed=True)
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS import_stage")

    def add(self, row: Row) -> None:
        if self.postgres:
            if self._copy is None:
                self._exit = contextlib.ExitStack()
                cursor = self._exit.enter_context(connection.cursor())
                self._copy = self._exit.enter_context(
                    cursor.copy(f"COPY import_stage ({_STAGE_COLUMNS}) FROM STDIN")
                )
            self._copy.write_row(row)
            self.staged += 1
            return
        self._rows.append(row)
        self._bytes += len(row[2]) + len(row[4]) + len(row[6]) + (len(row[3]) if row[3] else 0)
        if len(self._rows) >= CHUNK_ROWS or self._bytes >= CHUNK_BYTES:
            self.flush()

    def _end_copy(self, *, failed: bool) -> None:
        if self._exit is None:
            return
        stack, self._exit, self._copy = self._exit, None, None
        if failed:
            # Leaving the COPY with an exception makes psycopg abort it (CopyFail).
            with contextlib.suppress(_AbortCopy):
                stack.__exit__(_AbortCopy, _AbortCopy(), None)
        else:
            stack.close()

    def flush(self) -> None:
        """Finish writing what was added, so the connection can run other statements."""
        if self.postgres:
            self._end_copy(failed=False)
            return
        if not self._rows:
            return
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO import_stage (line, external_id, prompt, messages, metadata,"
                " priority, candidates) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                self._rows,
            )
        self.staged += len(self._rows)
        self._rows, self._bytes = [], 0

    def duplicates(self, errors: _Errors) -> None:
        """Record every repeat of an external_id inside the file (SQL, not a Python set)."""
        with connection.cursor() as cursor:
            if self.postgres:
                # Temp tables are never auto-analyzed; the grouping below needs the number of
                # distinct ids to plan a hash aggregate (the other columns are not needed).
                cursor.execute("ANALYZE import_stage (external_id)")
            cursor.execute(
                "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM import_stage"
                " GROUP BY external_id HAVING COUNT(*) > 1) AS d"
            )
            (count,) = cursor.fetchone()
            if not count:
                return
            cursor.execute(
                "SELECT line, external_id, first_line FROM ("
                " SELECT line, external_id,"
                " MIN(line) OVER (PARTITION BY external_id) AS first_line"
                " FROM import_stage) AS d"
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
        errors.count += int(count)

    def insert(self, *, project_id: int, job_id: int) -> tuple[int, int]:
        """Insert staged items that are new to the project, then their candidates. Returns
        ``(items inserted, candidates inserted)``. Call inside ``transaction.atomic``."""
        given = {
            "project": ("%s", project_id),
            "external_id": ("external_id", None),
            "prompt": ("prompt", None),
            "messages": ("messages", None),
            "metadata": ("metadata", None),
            "priority": ("priority", None),
            "source": ("%s", "import"),
            "import_job": ("%s", job_id),
        }
        if self.postgres:
            given["id"] = ("id", None)
        sql, params = _item_insert_sql(given=given, now=timezone.now(), postgres=self.postgres)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            items = cursor.rowcount
            if not self.postgres:
                return items, self._insert_candidates_sqlite(cursor, project_id, job_id)
            if items < self.staged:
                # Some ids were already in the project (or were just committed by a
                # concurrent import): their staged rows must not bring candidates.
                cursor.execute(
                    "DELETE FROM import_stage s"
                    " WHERE NOT EXISTS (SELECT 1 FROM curation_item i WHERE i.id = s.id)"
                )
            cursor.execute(
                "INSERT INTO curation_candidate (item_id, position, output, model)"
                " SELECT s.id, c.n - 1, c.pair ->> 0, c.pair ->> 1 FROM import_stage s"
                " CROSS JOIN LATERAL jsonb_array_elements(s.candidates)"
                " WITH ORDINALITY AS c(pair, n)"
            )
            candidates = cursor.rowcount
        return items, candidates

    @staticmethod
    def _insert_candidates_sqlite(cursor, project_id: int, job_id: int) -> int:
        cursor.execute(
            "INSERT INTO curation_candidate (item_id, position, output, model)"
            " SELECT i.id, CAST(c.key AS integer), json_extract(c.value, '$[0]'),"
            " json_extract(c.value, '$[1]')"
            " FROM import_stage s JOIN curation_item i"
            " ON i.project_id = %s AND i.external_id = s.external_id, json_each(s.candidates) c"
            " WHERE i.import_job_id = %s ORDER BY s.line, c.key",
            [project_id, job_id],
        )
        return cursor.rowcount


class _AbortCopy(Exception):
    """Raised into an open COPY to abort it (the run failed while staging)."""


def _item_insert_sql(
    *, given: dict[str, tuple[str, Any]], now, postgres: bool
) -> tuple[str, list[Any]]:
    """``INSERT INTO curation_item … SELECT … FROM import_stage`` naming every column of
    ``Item``: the staged ones, the ones in ``given`` and, for the rest, the field's default
    (so a column added to ``Item`` with a default needs no change here).

    Rows whose external_id is already in the project (or was just committed by a concurrent
    import) are skipped; the cursor's rowcount is the number actually inserted. On PostgreSQL
    the staged ids already follow the file's order; on SQLite the ids are assigned here, in
    line order ("WHERE true" lets SQLite parse ON CONFLICT after INSERT … SELECT).
    """
    from curation.models import Item

    columns, values, params = [], [], []
    for model_field in Item._meta.concrete_fields:
        if model_field.primary_key and model_field.name not in given:
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
    order = "" if postgres else " WHERE true ORDER BY line"
    sql = (
        f"INSERT INTO curation_item ({', '.join(columns)})"  # noqa: S608 (names from the model)
        f" SELECT {', '.join(values)} FROM import_stage{order}"
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
    with _running_lock(job.pk):
        try:
            _run(job, items)
        except Exception as exc:
            logger.exception("Import job %s failed", job.pk)
            _finish_failed(job, message=f"The import failed and nothing was imported: {exc}")
    job.refresh_from_db()
    return job


# Advisory-lock namespace for running imports ("RDLI"): the running job's database session
# holds (IMPORT_LOCK_CLASS, job id) while it works. PostgreSQL releases it when that session
# ends for any reason, so a job in a running state whose lock is free has lost its worker.
IMPORT_LOCK_CLASS = 0x52444C49
ORPHAN_GRACE = timedelta(minutes=1)  # between the claim and taking the lock
SQLITE_ORPHAN_AFTER = timedelta(hours=6)  # the demo has no advisory locks: go by age
_ORPHAN_MESSAGE = (
    "The worker running this import stopped before it finished (it was killed or lost its "
    "database connection); nothing was imported. Upload the file again."
)


@contextlib.contextmanager
def _running_lock(job_id: int):
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [IMPORT_LOCK_CLASS, job_id])
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [IMPORT_LOCK_CLASS, job_id])
        except Exception:  # the session is gone, and its locks with it
            logger.warning("Could not release the advisory lock of import %s", job_id)


def import_jobs_fail_orphaned(*, now=None) -> int:
    """Mark FAILED the imports whose worker died mid-run (beat, every few minutes), and remove
    their uploaded files. Nothing of such a job was imported: the insert is one transaction.

    On PostgreSQL a job is orphaned when nobody holds its advisory lock (see
    ``IMPORT_LOCK_CLASS``); on SQLite, when it has been running for ``SQLITE_ORPHAN_AFTER``.
    Returns how many jobs were failed.
    """
    now = now or timezone.now()
    running = list(
        ImportJob.objects.filter(
            status__in=[ImportStatus.VALIDATING, ImportStatus.IMPORTING],
            started_at__lte=now - ORPHAN_GRACE,
        )
    )
    failed = 0
    for job in running:
        if connection.vendor != "postgresql":
            if job.started_at <= now - SQLITE_ORPHAN_AFTER:
                failed += _fail_orphan(job, now)
            continue
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [IMPORT_LOCK_CLASS, job.pk])
            (free,) = cursor.fetchone()
        if not free:
            continue  # its worker is alive and working
        try:
            failed += _fail_orphan(job, now)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [IMPORT_LOCK_CLASS, job.pk])
    return failed


def _fail_orphan(job: ImportJob, now) -> int:
    changed = ImportJob.objects.filter(
        pk=job.pk, status__in=[ImportStatus.VALIDATING, ImportStatus.IMPORTING]
    ).update(status=ImportStatus.FAILED, finished_at=now, message=_ORPHAN_MESSAGE)
    if changed and job.path and _job_file(job).parent == imports_dir():
        _job_file(job).unlink(missing_ok=True)
    if changed:
        logger.warning("Import job %s lost its worker; marked failed", job.pk)
    return changed


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

    stage = _Stage()
    last_progress = [time.monotonic()]

    def progress(line: int) -> None:
        job.lines_done = line
        if time.monotonic() - last_progress[0] >= PROGRESS_EVERY_S:
            last_progress[0] = time.monotonic()
            stage.flush()  # the open COPY holds the connection
            _update(job, lines_done=line)

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
            for line, obj, clean in source:
                seen += 1
                row = _fast_row(obj, line, clean) or _validate(obj, line, errors)
                if row is not None:
                    stage.add(row)
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
