"""Writing a dataset version's files: one JSONL data file and one lineage file per kind and
split, each hashed (sha256) as it is written, and a 16-byte hash of every row for the
build's deduplication and for comparisons between versions.

Rows are kept as text and handled in blocks of ``FLUSH_ROWS``: a block is joined and encoded
at once, its lineage lines numbered as it is joined, every row of it hashed (blake2b, 16
bytes) in one comprehension and its spool records packed in one go. The cost per
row is two list appends; the rest is paid per block, mostly in C. Nothing here talks to the
database: the build hands the spooled row hashes to the decision source, which sorts them
and finds duplicates (PostgreSQL loads the spool as it is; the portable source reads it with
``read_spool``; see ``training.services.sources``).
"""

from __future__ import annotations

import array
import hashlib
import os
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.services.mapping import KINDS, SPLITS

FLUSH_ROWS = 2048


def data_file_name(kind: str, split: str) -> str:
    return f"{kind}.{split}.jsonl"


def lineage_file_name(kind: str, split: str) -> str:
    return f"{kind}.{split}.lineage.jsonl"


def row_hash(line: bytes) -> bytes:
    """A data line's 16-byte hash (without its newline): what dedup and comparisons use."""
    return hashlib.blake2b(line, digest_size=16).digest()


@dataclass
class OutputFile:
    """One data file and its lineage file, written in step, a block at a time.

    ``add`` takes a row's JSON line and the tail of its lineage line (everything after
    ``{"row":N,``); the row number is put in when the block is written."""

    kind: str
    split: str
    directory: Path
    on_block: Callable[[OutputFile, int, bytes], None] | None = None  # (file, first row, hashes)
    rows: int = 0
    data_bytes: int = 0
    lineage_bytes: int = 0
    data_sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    lineage_sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    _data: list[str] = field(default_factory=list)
    _lineage: list[str] = field(default_factory=list)
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

    def add(self, line: str, lineage_tail: str) -> None:
        """Append one row: its JSON line (no newline) and its lineage line after
        ``{"row":N,``. ``rows`` counts it once its block is written."""
        self._data.append(line)
        self._lineage.append(lineage_tail)
        if len(self._data) >= FLUSH_ROWS:
            self.flush()

    def sinks(self) -> tuple[Callable[[str], None], Callable[[str], None]]:
        """The two ``append``s behind ``add``, for the build's loop: no Python call a row;
        the loop calls ``flush_if_full`` every few items instead."""
        return self._data.append, self._lineage.append

    def flush_if_full(self) -> None:
        if len(self._data) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._data:
            return
        if self._data_file is None:
            self._open()
        first = self.rows
        self.rows += len(self._data)
        data = ("\n".join(self._data) + "\n").encode()
        lineage = (
            "\n".join(
                [
                    '{"row":' + str(n) + "," + tail
                    for n, tail in zip(range(first, self.rows), self._lineage, strict=True)
                ]
            )
            + "\n"
        ).encode()
        self._data_file.write(data)
        self._lineage_file.write(lineage)
        self.data_sha.update(data)
        self.lineage_sha.update(lineage)
        self.data_bytes += len(data)
        self.lineage_bytes += len(lineage)
        if self.on_block is not None:
            # JSON lines hold no raw newline (json escapes it), so splitting the encoded block
            # gives back each row's bytes; the last piece is the empty one after the final \n.
            lines = data.split(b"\n")
            lines.pop()
            blake2b = hashlib.blake2b
            self.on_block(
                self, first, b"".join([blake2b(x, digest_size=16).digest() for x in lines])
            )
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


def part_paths(directory: Path, kind: str, split: str) -> tuple[Path, Path, Path]:
    """A ``PartFile``'s data lines, lineage tails and row hashes."""
    return tuple(directory / f"{kind}.{split}.{what}" for what in ("data", "tails", "hashes"))


class PartFile:
    """The rows of a later range of items for one (kind, split), written by a second build
    process, to be appended to the ``OutputFile`` of the earlier range (``append_part``).

    Three files: the data lines as they will be, the lineage lines after ``{"row":N,``
    (numbers depend on the rows before, known only at the merge) and the rows' 16-byte
    hashes end to end. Same ``add`` as ``OutputFile``; the same bytes once merged."""

    def __init__(self, kind: str, split: str, directory: Path):
        self.kind, self.split = kind, split
        self.paths = part_paths(directory, kind, split)
        self.rows = 0
        self._data: list[str] = []
        self._lineage: list[str] = []
        self._files: list | None = None

    def add(self, line: str, lineage_tail: str) -> None:
        self._data.append(line)
        self._lineage.append(lineage_tail)
        if len(self._data) >= FLUSH_ROWS:
            self.flush()

    def sinks(self) -> tuple[Callable[[str], None], Callable[[str], None]]:
        return self._data.append, self._lineage.append

    def flush_if_full(self) -> None:
        if len(self._data) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._data:
            return
        if self._files is None:
            self._files = [open(path, "wb") for path in self.paths]  # noqa: SIM115 (close())
        self.rows += len(self._data)
        data = ("\n".join(self._data) + "\n").encode()
        lines = data.split(b"\n")
        lines.pop()
        blake2b = hashlib.blake2b
        self._files[0].write(data)
        self._files[1].write(("\n".join(self._lineage) + "\n").encode())
        self._files[2].write(b"".join([blake2b(x, digest_size=16).digest() for x in lines]))
        self._data.clear()
        self._lineage.clear()

    def close(self) -> None:
        self.flush()
        for f in self._files or ():
            f.close()
        self._files = None


def _line_blocks(f, size: int = 1024 * 1024) -> Iterator[bytes]:
    """A file of newline-ended lines in blocks of whole lines."""
    rest = b""
    while chunk := f.read(size):
        chunk = rest + chunk
        cut = chunk.rfind(b"\n") + 1
        rest = chunk[cut:]
        if cut:
            yield chunk[:cut]
    if rest:
        raise ValueError(f"{f.name} does not end with a newline.")


def append_part(out: OutputFile, part_dir: Path, rows: int) -> None:
    """Append a ``PartFile``'s ``rows`` rows to ``out`` (flushed, still open): data as it is,
    lineage numbered after ``out``'s rows, hashes spooled under their final numbers."""
    out.flush()
    data_path, tails_path, hashes_path = part_paths(part_dir, out.kind, out.split)
    if not rows:
        return
    if out._data_file is None:
        out._open()
    first = out.rows
    with open(data_path, "rb") as f:
        while block := f.read(1024 * 1024):
            out._data_file.write(block)
            out.data_sha.update(block)
            out.data_bytes += len(block)
    number = first
    with open(tails_path, "rb") as f:
        for block in _line_blocks(f):
            tails = block.split(b"\n")
            tails.pop()
            lineage = (
                b"\n".join(
                    [
                        b'{"row":%d,' % n + t
                        for n, t in zip(range(number, number + len(tails)), tails, strict=True)
                    ]
                )
                + b"\n"
            )
            number += len(tails)
            out._lineage_file.write(lineage)
            out.lineage_sha.update(lineage)
            out.lineage_bytes += len(lineage)
    if number - first != rows:
        raise RuntimeError(f"{tails_path.name}: {number - first} lineage lines for {rows} rows.")
    if out.on_block is not None:
        with open(hashes_path, "rb") as f:
            number = first
            while block := f.read(16 * FLUSH_ROWS):
                out.on_block(out, number, block)
                number += len(block) // 16
        if number - first != rows:
            raise RuntimeError(f"{hashes_path.name}: {number - first} hashes for {rows} rows.")
    out.rows += rows


# PostgreSQL's binary COPY format, for the row hashes: (kind int2, split int2, row_no int4,
# h bytea) per tuple, each field preceded by its length.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
_HASH_RECORD = struct.Struct(">hihihiii16s")
SPOOL_RECORD = _HASH_RECORD.size


def hash_records(kind: int, split: int, first_row: int, hashes: bytes) -> bytes:
    """The spool records of consecutive rows ``first_row``… of one file, ``hashes`` being
    their 16-byte hashes end to end: byte for byte ``_HASH_RECORD.pack`` of each, built a
    block at a time: the constant fields repeated, then the row numbers and the hashes
    filled in byte column by byte column (strided slice assignments, all in C)."""
    n = len(hashes) // 16
    records = bytearray(_HASH_RECORD.pack(4, 2, kind, 2, split, 4, 0, 16, bytes(16)) * n)
    rows = array.array("i", range(first_row, first_row + n))  # 4 bytes each (checked below)
    if sys.byteorder == "little":
        rows.byteswap()
    rows_bytes = rows.tobytes()
    row_at, hash_at = 18, 26  # offsets of row_no and h in a record
    for j in range(4):
        records[row_at + j :: SPOOL_RECORD] = rows_bytes[j::4]
    for j in range(16):
        records[hash_at + j :: SPOOL_RECORD] = hashes[j::16]
    return bytes(records)


assert array.array("i").itemsize == 4 and _HASH_RECORD.size == 42


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
            (kind, split): OutputFile(kind, split, directory, on_block=self._spool_block)
            for kind in KINDS
            if kind in set(kinds)
            for split in SPLITS
        }
        self.spool_path = spool
        self._spool = open(spool, "wb")  # noqa: SIM115 (closed in close())
        self._spool.write(COPY_SIGNATURE)

    def add(self, kind: str, split: str, line: str, lineage_tail: str) -> None:
        """One row of ``kind`` on ``split``: its JSON line and its lineage line after
        ``{"row":N,`` (``mapping.lineage_tail``)."""
        self.outputs[(kind, split)].add(line, lineage_tail)

    def sinks(self) -> dict[tuple[str, str], tuple[Callable[[str], None], Callable[[str], None]]]:
        """Each file's ``sinks()`` by (kind, split), for the build's loop."""
        return {key: out.sinks() for key, out in self.outputs.items()}

    def flush_if_full(self) -> None:
        for out in self.outputs.values():
            out.flush_if_full()

    def _spool_block(self, out: OutputFile, first_row: int, hashes: bytes) -> None:
        self._spool.write(hash_records(out.kind_index, out.split_index, first_row, hashes))

    def close(self) -> None:
        """Flush and close every file; the spool ends as a complete binary COPY stream."""
        for out in self.outputs.values():
            out.close()
        if not self._spool.closed:
            self._spool.write(COPY_TRAILER)
            self._spool.close()

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
