"""Zip archives produced while they are sent: nothing held in memory beyond a chunk, nothing
written to disk. Used for dataset and adapter downloads."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class _Sink:
    """A write-only file object for ``zipfile``: collects what it is given until taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.pending = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        self.pending += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts = []
        self.pending = 0
        return data


def zip_stream(
    files: Iterable[tuple[str, Path]], *, chunk_size: int = 1024 * 1024
) -> Iterator[bytes]:
    """Yield a zip of ``files`` (``(name in the archive, path on disk)``) chunk by chunk.

    Entries carry a fixed date (1980-01-01), so the same files make the same archive.
    """
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as source, archive.open(info, "w", force_zip64=True) as target:
                while data := source.read(chunk_size):
                    target.write(data)
                    if sink.pending >= chunk_size:
                        yield sink.take()
            if sink.pending:
                yield sink.take()
    yield sink.take()  # the central directory
