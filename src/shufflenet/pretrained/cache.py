"""The weights cache: each publisher's file as downloaded, and the checkpoint converted from it.

    $SHUFFLENET_HOME (default ~/.cache/shufflenet)
      downloads/<model>.<tag>/<file>        the publisher's file, checked before it took its name
      downloads/<model>.<tag>/<file>.part   an unfinished download, resumed by the next fetch
      downloads/<model>.<tag>/<file>.sha256 its SHA-256 at the first use (no published hash)
      checkpoints/<model>.<tag>.ckpt        the converted checkpoint, with its description
      checkpoints/<model>.<tag>.json        what it was made from; written last, so it marks a
                                            finished conversion
      locks/<model>.<tag>.lock              one fetch at a time (processes, and ranks of a job)

Every file is checked by its hash each time it is used: a file damaged after it was cached is
fetched or converted again, never loaded. A ModelArts job can point `SHUFFLENET_HOME` at a folder
filled beforehand and set `SHUFFLENET_OFFLINE=1`.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from ..utils.checkpoint import read_checkpoint
from ..utils.files import atomic_path, sha256_file, write_text
from .convert import import_weights
from .download import MIRROR_ENV, OFFLINE_ENV, download, mirrored, offline
from .table import OWN, WeightEntry

HOME_ENV = "SHUFFLENET_HOME"


def weights_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "shufflenet")


@dataclass(frozen=True)
class CachePaths:
    source: Path
    source_hash: Path
    checkpoint: Path
    record: Path
    lock: Path


def cache_paths(entry: WeightEntry, home: Path | None = None) -> CachePaths:
    home = home or weights_home()
    source = home / "downloads" / entry.name / Path(entry.source_name).name
    checkpoints = home / "checkpoints"
    return CachePaths(source, source.with_name(source.name + ".sha256"), checkpoints / f"{entry.name}.ckpt",
                      checkpoints / f"{entry.name}.json", home / "locks" / f"{entry.name}.lock")


def is_cached(entry: WeightEntry, home: Path | None = None) -> bool:
    """Whether a finished conversion of the entry's file is in the cache (not re-hashed here)."""
    paths = cache_paths(entry, home)
    return paths.checkpoint.is_file() and paths.record.is_file()


def fetch_checkpoint(entry: WeightEntry, home: Path | None = None, progress: bool = True) -> Path:
    """The converted checkpoint of `entry`: from the cache if intact, else downloaded (or taken
    from where a user placed it), checked, converted and cached. One process at a time."""
    home = home or weights_home()
    paths = cache_paths(entry, home)
    try:
        for folder in (paths.source.parent, paths.checkpoint.parent, paths.lock.parent):
            folder.mkdir(parents=True, exist_ok=True)
        with FileLock(paths.lock):
            if _intact(entry, paths):
                return paths.checkpoint
            source_sha256 = _checked_source(entry, paths, progress)
            _convert(entry, paths, source_sha256)
            return paths.checkpoint
    except OSError as err:
        raise ValueError(_cache_fault(err, home)) from None


def _intact(entry: WeightEntry, paths: CachePaths) -> bool:
    if not (paths.checkpoint.is_file() and paths.record.is_file()):
        return False
    try:
        record = json.loads(paths.record.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        record = {}
    same_file = record.get("url") == entry.url and record.get("file") == entry.source_name
    if not same_file or _hash_fault(entry, paths, str(record.get("source_sha256"))) is not None:
        return False  # the entry now names another file, or another hash of it
    if sha256_file(paths.checkpoint) == record.get("sha256"):
        return True
    _note(f"{paths.checkpoint} is damaged (its SHA-256 is not the one recorded); converting it again")
    return False


def _checked_source(entry: WeightEntry, paths: CachePaths, progress: bool) -> str:
    """The SHA-256 of the publisher's file in the cache, fetched if missing or damaged."""
    if paths.source.is_file():
        actual = sha256_file(paths.source)
        fault = _hash_fault(entry, paths, actual)
        if fault is None:
            _record_first(entry, paths, actual)  # a file the user placed by hand
            return actual
        if offline() or not entry.direct:
            raise ValueError(f"{paths.source} is not the publisher's file ({fault}); replace it with "
                             f"{_origin(entry)}")
        _note(f"{paths.source} is damaged ({fault}); fetching it again")
        paths.source.unlink()
    if not entry.direct:
        raise ValueError(f"{entry.name} is no direct download: download {entry.source_name} from "
                         f"{entry.page} and place it at {paths.source}, then run this again")
    if offline():
        raise ValueError(f"{OFFLINE_ENV} is set and {entry.name} is not cached: place {entry.source_name} "
                         f"(from {entry.url}) at {paths.source}, or unset {OFFLINE_ENV}")
    url = mirrored(entry.url)
    part = download(url, paths.source, progress)
    actual = sha256_file(part)
    fault = _hash_fault(entry, paths, actual)
    if fault is not None:
        part.unlink()
        raise ValueError(f"the file from {url} failed its check ({fault}) and was removed, not converted; "
                         f"the download was damaged or the file changed: try again, or check {MIRROR_ENV}")
    os.replace(part, paths.source)
    _record_first(entry, paths, actual)
    return actual


def _record_first(entry: WeightEntry, paths: CachePaths, actual: str) -> None:
    """Trust on first use, where the publisher documents no hash: record it, require it after."""
    if entry.check == "first-download" and not paths.source_hash.is_file():
        write_text(paths.source_hash, actual + "\n")
        _note(f"{entry.source_name}: SHA-256 {actual} recorded at its first use ({entry.publisher} "
              "publishes no hash); later uses must match it")


def _hash_fault(entry: WeightEntry, paths: CachePaths, actual: str) -> str | None:
    """Why `actual` is not the SHA-256 the entry's check expects, or None."""
    if entry.check == "sha256":
        expected = entry.sha256
    elif entry.check == "sha256-prefix":
        expected = entry.hash_prefix
    elif paths.source_hash.is_file():
        expected = paths.source_hash.read_text(encoding="ascii").strip()
    else:
        expected = None
    if expected is None or actual.startswith(expected):
        return None
    return f"SHA-256 {actual[:16]}..., expected {expected[:16]}..."


def _convert(entry: WeightEntry, paths: CachePaths, source_sha256: str) -> None:
    """Checkpoint, then the record that marks it finished (a kill between leaves no record)."""
    if entry.publisher == OWN:
        with atomic_path(paths.checkpoint) as tmp:
            shutil.copyfile(paths.source, tmp)
            read_checkpoint(tmp)  # a whole, readable checkpoint before it is cached
    else:
        import_weights(paths.source, paths.checkpoint, entry.publisher, entry.model, options=entry.options,
                       preprocessing=entry.preprocessing, report=_note)
    record = {"model": entry.model, "tag": entry.tag, "url": entry.url, "file": entry.source_name,
              "source_sha256": source_sha256, "sha256": sha256_file(paths.checkpoint)}
    write_text(paths.record, json.dumps(record, indent=1) + "\n")
    _note(f"cached {entry.name} as {paths.checkpoint}")


def _origin(entry: WeightEntry) -> str:
    return f"the file from {entry.url}" if entry.direct else f"{entry.source_name} from {entry.page}"


def _cache_fault(err: OSError, home: Path) -> str:
    where = err.filename or home
    if err.errno == errno.ENOSPC:
        return f"no space left on the device holding {where}; free some, or set {HOME_ENV} to another folder"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the weights cache {where} is not writable; set {HOME_ENV} to a folder you can write"
    return f"{where}: {err.strerror or err}; check {HOME_ENV} ({home})"


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
