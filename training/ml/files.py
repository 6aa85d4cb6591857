"""File helpers for model and adapter folders: atomic folder publication, hashes, safetensors headers.

Standard library only, so the web process can use them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def temp_dir_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))


def publish_dir(tmp: Path, dest: Path) -> None:
    """Move a finished folder into place; an existing `dest` is replaced as a whole.

    `os.replace` cannot replace a non-empty folder, so the old one is first renamed aside (a
    rename on the same file system, so readers see either the old or the new folder, never a
    half-written one) and removed afterwards.
    """
    _umask_permissions(tmp)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{tmp.name[-8:]}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask_permissions(folder: Path) -> None:
    # mkdtemp makes 0700 folders and some writers make 0600 files; a published folder is read
    # by other processes (web, workers), so it gets the ordinary umask-based modes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `dest`; on success it becomes `dest`, on error it is removed."""
    dest = Path(dest)
    tmp = temp_dir_beside(dest)
    try:
        yield tmp
        publish_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header of {length} bytes)")
        return json.loads(fh.read(length))


def safetensors_parameter_count(folder: str | os.PathLike) -> int | None:
    """Number of parameters stored in a local model folder, read from the safetensors headers.

    Reads a few kilobytes, needs no torch. None when the folder holds no safetensors weights.
    Tied weights are stored once, so this matches `sum(p.numel() for p in model.parameters())`.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        for name, info in _safetensors_header(file).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total
