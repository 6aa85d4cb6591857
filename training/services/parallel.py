"""A PostgreSQL build split between two processes.

The build's own process maps the lower half of the selected items (by item id) while a
forked process maps the upper half, each from its own ``COPY`` stream: both read the same
snapshot (the build exports it with ``pg_export_snapshot()``; the helper's connection
imports it with ``SET TRANSACTION SNAPSHOT``), so together they read exactly the decisions
one process would. The helper writes ``PartFile``s (data lines, lineage lines without
their row numbers, row hashes) and reports its counts through a pipe; the build then
appends them to its own files (``writer.append_part``), numbering the lineage and the
spooled hashes after its own rows. The files are therefore byte for byte those of a
single process, which a test checks.

The helper never touches the parent's database connections (it opens its own and leaves
with ``os._exit``, so nothing inherited is closed or flushed twice); if the build fails,
the helper is killed and its files go with the temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from training import selectors
from training.services.mapping import KINDS, SPLITS, SummaryTally
from training.services.writer import PartFile


def copy_rows(cursor, sql: str, params: list[Any]) -> Iterator[tuple]:
    """The rows of ``COPY (sql) TO STDOUT`` on a psycopg cursor, typed as the build reads
    them (``selectors.DECISION_TYPES_SHAPED``: ``sql`` is the shaped stream)."""
    with cursor.copy(f"COPY ({sql}) TO STDOUT", params) as stream:
        stream.set_types(selectors.DECISION_TYPES_SHAPED)
        yield from stream.rows()


class HelperFailed(RuntimeError):
    pass


class UpperHalf:
    """The forked process mapping the items from ``split_at`` up. ``join()`` waits for it
    and returns ``{"tally": counts, "rows": {"<kind>.<split>": rows}}``; ``kill()`` stops it."""

    def __init__(self, pid: int, fd: int):
        self.pid, self.fd = pid, fd

    @classmethod
    def start(cls, source, mapper, split_at: int, directory: Path) -> UpperHalf:
        connect = source.snapshot_connector()  # exports the snapshot now, in this process
        sql, params = source.stream_sql(item_range=(split_at, None))
        directory.mkdir()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper
            code = 1
            try:
                os.close(read_fd)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                try:
                    result = _upper_half(connect, sql, params, mapper, directory)
                    code = 0
                except BaseException as exc:  # noqa: BLE001 (reported to the build)
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                payload = json.dumps(result).encode()
                while payload:
                    payload = payload[os.write(write_fd, payload) :]
            finally:
                os._exit(code)
        os.close(write_fd)
        return cls(pid, read_fd)

    def join(self) -> dict[str, Any]:
        chunks = []
        while chunk := os.read(self.fd, 65536):
            chunks.append(chunk)
        os.close(self.fd)
        self.fd = -1
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        try:
            result = json.loads(b"".join(chunks) or b"{}")
        except ValueError:
            result = {}
        if "error" in result:
            raise HelperFailed(f"the build's second process failed: {result['error']}")
        if os.waitstatus_to_exitcode(status) != 0 or "tally" not in result:
            raise HelperFailed(
                f"the build's second process ended with status {os.waitstatus_to_exitcode(status)}"
            )
        return result

    def kill(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _upper_half(
    connect: Callable[[], Any], sql: str, params: list[Any], mapper, directory: Path
) -> dict[str, Any]:
    conn = connect()
    try:
        parts = {
            (kind, split): PartFile(kind, split, directory)
            for kind in KINDS
            if kind in mapper.kinds
            for split in SPLITS
        }
        tally = SummaryTally()
        with conn.cursor() as cursor:
            mapper.run(
                copy_rows(cursor, sql, params),
                {key: p.sinks() for key, p in parts.items()},
                lambda: [p.flush_if_full() for p in parts.values()],
                tally,
            )
        for part in parts.values():
            part.close()
        return {
            "tally": tally.counts(),
            "rows": {f"{kind}.{split}": p.rows for (kind, split), p in parts.items()},
        }
    finally:
        conn.close()
