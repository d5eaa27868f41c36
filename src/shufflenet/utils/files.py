"""Files written whole or not at all, and fingerprints of files written earlier.

Every file a command writes goes to a temporary name in the target folder, is flushed to disk
and then renamed over the target, so a killed run or a full disk leaves the previous file or the
new one, never a torn one, and no temporary file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed to `path` when the block succeeds,
    removed when it fails. The temporary name keeps the suffix (writers that append one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".tmp").unlink(missing_ok=True)  # MindSpore's own staging file, if any


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def leftover_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of writes that were killed midway (`.NAME.tmp-PID.*`) in `folder`."""
    folder = Path(folder)
    return sorted(folder.glob(".*.tmp-*")) if folder.is_dir() else []
