"""Writing a dataset version's files: one JSONL data file and one lineage file per kind and
split, each hashed (sha256) as it is written, and a 16-byte hash of every row for the
build's deduplication and for comparisons between versions.

Lines are buffered and written in blocks, so the cost per row is an encode, a blake2b and a
few appends. Nothing here talks to the database: the build hands the spooled row hashes to
the decision source, which sorts them and finds duplicates (PostgreSQL loads the spool as it
is; the portable source reads it with ``read_spool``; see ``training.services.sources``).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.services.mapping import KINDS, SPLITS, lineage_line

FLUSH_ROWS = 2048


def data_file_name(kind: str, split: str) -> str:
    return f"{kind}.{split}.jsonl"


def lineage_file_name(kind: str, split: str) -> str:
    return f"{kind}.{split}.lineage.jsonl"


@dataclass
class OutputFile:
    """One data file and its lineage file, written line by line in step."""

    kind: str
    split: str
    directory: Path
    rows: int = 0
    data_bytes: int = 0
    lineage_bytes: int = 0
    data_sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    lineage_sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    _data: list[bytes] = field(default_factory=list)
    _lineage: list[bytes] = field(default_factory=list)
    _data_file: object = None
    _lineage_file: object = None
    kind_index: int = field(init=False)  # the row hashes name files by these numbers
    split_index: int = field(init=False)

    def __post_init__(self) -> None:
        self.kind_index = KINDS.index(self.kind)
        self.split_index = SPLITS.index(self.split)

    @property
    def name(self) -> str:
        return data_file_name(self.kind, self.split)

    @property
    def lineage_name(self) -> str:
        return lineage_file_name(self.kind, self.split)

    def _open(self) -> None:
        self._data_file = open(self.directory / self.name, "wb")  # noqa: SIM115 (closed in close())
        self._lineage_file = open(self.directory / self.lineage_name, "wb")  # noqa: SIM115

    def add(self, line: bytes, lineage: bytes) -> int:
        """Append one row (without its newline); returns its row number."""
        self._data.append(line)
        self._lineage.append(lineage)
        self.rows += 1
        if len(self._data) >= FLUSH_ROWS:
            self.flush()
        return self.rows - 1

    def flush(self) -> None:
        if not self._data:
            return
        if self._data_file is None:
            self._open()
        data = b"\n".join(self._data) + b"\n"
        lineage = b"\n".join(self._lineage) + b"\n"
        self._data_file.write(data)
        self._lineage_file.write(lineage)
        self.data_sha.update(data)
        self.lineage_sha.update(lineage)
        self.data_bytes += len(data)
        self.lineage_bytes += len(lineage)
        self._data.clear()
        self._lineage.clear()

    def close(self) -> None:
        self.flush()
        for f in (self._data_file, self._lineage_file):
            if f is not None:
                f.close()
        self._data_file = self._lineage_file = None

    def drop_rows(self, drop: Iterable[int]) -> int:
        """Rewrite the closed files without the rows numbered in ``drop`` (ascending), the
        lineage renumbered; returns how many rows were dropped."""
        data_path = self.directory / self.name
        lineage_path = self.directory / self.lineage_name
        data_tmp = data_path.with_suffix(".rewrite")
        lineage_tmp = lineage_path.with_suffix(".rewrite")
        self.rows = self.data_bytes = self.lineage_bytes = 0
        self.data_sha, self.lineage_sha = hashlib.sha256(), hashlib.sha256()
        drop_iter: Iterator[int] = iter(drop)
        next_drop = next(drop_iter, None)
        dropped = 0
        with (
            open(data_path, "rb") as data_in,
            open(lineage_path, "rb") as lineage_in,
            open(data_tmp, "wb") as data_out,
            open(lineage_tmp, "wb") as lineage_out,
        ):
            for number, (line, lineage) in enumerate(zip(data_in, lineage_in, strict=True)):
                if number == next_drop:
                    dropped += 1
                    next_drop = next(drop_iter, None)
                    continue
                # '{"row":N,…' → '{"row":M,…'
                lineage = b'{"row":%d' % self.rows + lineage[lineage.index(b",") :]
                data_out.write(line)
                lineage_out.write(lineage)
                self.data_sha.update(line)
                self.lineage_sha.update(lineage)
                self.data_bytes += len(line)
                self.lineage_bytes += len(lineage)
                self.rows += 1
        os.replace(data_tmp, data_path)
        os.replace(lineage_tmp, lineage_path)
        return dropped

    def remove(self) -> None:
        for name in (self.name, self.lineage_name):
            (self.directory / name).unlink(missing_ok=True)

    def manifest_entry(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "split": self.split,
            "rows": self.rows,
            "bytes": self.data_bytes,
            "sha256": self.data_sha.hexdigest(),
            "lineage": {
                "name": self.lineage_name,
                "bytes": self.lineage_bytes,
                "sha256": self.lineage_sha.hexdigest(),
            },
        }


# PostgreSQL's binary COPY format, for the row hashes: (kind int2, split int2, row_no int4,
# h bytea) per tuple, each field preceded by its length.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
_HASH_RECORD = struct.Struct(">hihihiii16s")
SPOOL_FLUSH_BYTES = 1024 * 1024


def read_spool(path: Path) -> Iterator[tuple[int, int, int, bytes]]:
    """The records of a closed spool: ``(kind, split, row_no, hash)``, in the order written,
    read in blocks."""
    size = _HASH_RECORD.size
    body = os.path.getsize(path) - len(COPY_SIGNATURE) - len(COPY_TRAILER)
    with open(path, "rb") as f:
        if body < 0 or body % size or f.read(len(COPY_SIGNATURE)) != COPY_SIGNATURE:
            raise ValueError(f"{path} is not a complete row hash spool.")
        while body:
            block = f.read(min(body, size * 16384))
            body -= len(block)
            for record in _HASH_RECORD.iter_unpack(block):
                yield record[2], record[4], record[6], record[8]
        if f.read() != COPY_TRAILER:
            raise ValueError(f"{path} is not a complete row hash spool.")


class DatasetWriter:
    """The output files of one build, and a spool file of every row's hash in PostgreSQL's
    binary COPY format (loaded into a TEMP table once the stream has ended: the connection
    is busy streaming until then)."""

    def __init__(self, directory: Path, kinds: Iterable[str], spool: Path):
        self.directory = directory
        self.outputs = {
            (kind, split): OutputFile(kind, split, directory)
            for kind in KINDS
            if kind in set(kinds)
            for split in SPLITS
        }
        self.spool_path = spool
        self._spool = open(spool, "wb")  # noqa: SIM115 (closed in close())
        self._spool.write(COPY_SIGNATURE)
        self._hashes = bytearray()

    def add(self, kind: str, split: str, line: str, origins: list[str], item_part: str) -> None:
        out = self.outputs[(kind, split)]
        data = line.encode()
        row = out.rows
        out.add(data, lineage_line(row, origins, item_part).encode())
        digest = hashlib.blake2b(data, digest_size=16).digest()
        self._hashes += _HASH_RECORD.pack(
            4, 2, out.kind_index, 2, out.split_index, 4, row, 16, digest
        )
        if len(self._hashes) >= SPOOL_FLUSH_BYTES:
            self._spool.write(self._hashes)
            self._hashes.clear()

    def close(self) -> None:
        """Flush and close every file; the spool ends as a complete binary COPY stream."""
        for out in self.outputs.values():
            out.close()
        if not self._spool.closed:
            self._spool.write(self._hashes)
            self._spool.write(COPY_TRAILER)
            self._spool.close()
            self._hashes.clear()

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for (kind, split), out in self.outputs.items():
            counts.setdefault(kind, {})[split] = out.rows
        return counts

    @property
    def rows_total(self) -> int:
        return sum(out.rows for out in self.outputs.values())

    def finish(self) -> list[dict]:
        """Remove empty files; the manifest entries of the others, in a fixed order."""
        entries = []
        for out in self.outputs.values():
            if out.rows == 0:
                out.remove()
            else:
                entries.append(out.manifest_entry())
        return entries
