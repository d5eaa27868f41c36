"""Files written whole or not at all, never through a planted link; fingerprints of files.

Every file a command writes is first written into a scratch folder of its own beside the target
(`mkdtemp`: mode 0700 under a fresh random name, so nothing another user planted there is
followed, and MindSpore's staging files and chmods stay inside it), flushed to disk and renamed
over the target: a killed run or a full disk leaves the previous file or the new one, never a
torn one. Files that must change together (a model and its sidecar) are moved by a journal
(`commit`). A scratch folder's name holds its writer's pid and host, so the next command in that
folder (`recover_leftovers`) finishes the committed moves of a writer that is gone and removes
the rest of what it left, and never touches a live writer's.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

#: The journal of a scratch folder whose files are being moved into place (`commit`).
JOURNAL = "COMMIT.json"
#: `.{target name}.tmp-{pid}-{host}-{random}`: a scratch folder of `make_scratch`.
SCRATCH_NAME = re.compile(r"^\.(?P<label>.+)\.tmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[a-z0-9_]{8}$")
#: Temporaries of earlier versions: `.best.tmp-4242.ckpt` files, `.export-XXXXXXXX` folders.
LEGACY_FILE = re.compile(r"^\..+\.tmp-(?P<pid>\d+)(\.[^.]*)?$")
LEGACY_EXPORT = re.compile(r"^\.export-[a-z0-9_]{8}$")
#: A legacy export folder records no writer: it is taken as abandoned after this long.
LEGACY_EXPORT_AGE_S = 3600
#: Longest part of a target's name kept in its scratch folder's name (names end at 255 bytes).
MAX_LABEL = 120


def host_tag() -> str:
    """This machine in 8 hex digits: a pid is only checked on the host that wrote it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def make_scratch(folder: str | os.PathLike, label: str) -> Path:
    """A new private folder (0700, unpredictable name) in `folder` for writing `label`."""
    prefix = f".{label[:MAX_LABEL]}.tmp-{os.getpid()}-{host_tag()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=folder))


@contextlib.contextmanager
def scratch_folder(folder: str | os.PathLike, label: str) -> Iterator[Path]:
    """`make_scratch`, removed when the block ends, unless it holds a journal: a commit that
    failed midway is finished by the next `recover_leftovers` there, not undone."""
    scratch = make_scratch(folder, label)
    try:
        yield scratch
    finally:
        if not (scratch / JOURNAL).exists():
            _discard(scratch)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A path to write `path`'s new content to (same name, in a private scratch folder beside
    it); renamed over `path` when the block succeeds, removed with its folder either way.

    The rename replaces a link at `path` itself, never its target."""
    path = Path(path)
    with scratch_folder(path.parent, path.name) as scratch:
        tmp = scratch / path.name
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def open_for_append(path: str | os.PathLike) -> TextIO:
    """`path` opened to append (created if missing) without following a link (O_NOFOLLOW): a
    log never writes into a file someone linked there; a ValueError names it instead."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link: a log is never written through a link; "
                             "remove it or write elsewhere") from None
        if err.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads
            raise
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd is not None:
            os.close(fd)
        raise ValueError(f"{path} is not a regular file; remove it or write elsewhere")
    return os.fdopen(fd, "a", encoding="utf-8")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def commit(scratch: Path, names: Sequence[str]) -> None:
    """Move the finished files `names` of `scratch` over their namesakes beside it, all of
    them or none: a journal listing them is made durable first, so a kill at any later point
    is finished by the next `recover_leftovers` in that folder (a kill before it leaves the
    old files, and the scratch folder is removed)."""
    for name in names:
        _check_name(name, scratch)
        if not (scratch / name).is_file():
            raise FileNotFoundError(errno.ENOENT, "nothing to commit", str(scratch / name))
    _write_journal(scratch, names)
    _roll_forward(scratch)


def _write_journal(scratch: Path, names: Sequence[str]) -> None:
    part = scratch / f"{JOURNAL}.part"
    with open(part, "x", encoding="utf-8") as handle:
        json.dump({"files": list(names)}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, scratch / JOURNAL)
    _fsync_dir(scratch)


def _roll_forward(scratch: Path) -> list[str]:
    """The journal's moves (each at most once: a file already moved is gone from `scratch`),
    then the scratch folder is removed. Returns the names moved into place."""
    names = _read_journal(scratch)
    for name in names:
        _move(scratch, name)
    _fsync_dir(scratch.parent)
    _discard(scratch)
    return names


def _read_journal(scratch: Path) -> list[str]:
    try:
        names = json.loads((scratch / JOURNAL).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{scratch / JOURNAL} is unreadable ({err})") from None
    if not isinstance(names, list):
        raise ValueError(f"{scratch / JOURNAL} lists no files")
    for name in names:
        _check_name(name, scratch)
    return names


def _check_name(name: object, scratch: Path) -> None:
    """Only plain names are moved, so a journal can only replace files beside its folder."""
    if not isinstance(name, str) or name in ("", ".", "..", JOURNAL) or os.sep in name:
        raise ValueError(f"{scratch}: {name!r} is not a file name a commit can move")


def _move(scratch: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # moved already, by the writer or a recovery
        os.replace(scratch / name, scratch.parent / name)


def _discard(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (where the file system lets a folder be synced)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def leftover_temporaries(folder: str | os.PathLike) -> list[Path]:
    """What writes killed midway left in `folder` (this user's, their writer gone): scratch
    folders, and the temporary files and export folders of earlier versions."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.glob(".*") if _abandoned(path))


def _abandoned(path: Path) -> bool:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if info.st_uid != os.geteuid():
        return False
    if match := SCRATCH_NAME.match(path.name):
        return match["host"] == host_tag() and not pid_alive(int(match["pid"]))
    if match := LEGACY_FILE.match(path.name):
        return not stat.S_ISDIR(info.st_mode) and not pid_alive(int(match["pid"]))
    return bool(LEGACY_EXPORT.match(path.name)) and time.time() - info.st_mtime > LEGACY_EXPORT_AGE_S


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a process of another user counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_leftovers(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Finish the committed moves of killed writers in `folder` and remove the rest of what
    they left. Returns (files moved into place, leftovers removed)."""
    finished: list[Path] = []
    removed: list[Path] = []
    for path in leftover_temporaries(folder):
        if SCRATCH_NAME.match(path.name) and path.is_dir() and (path / JOURNAL).is_file():
            try:
                finished += [path.parent / name for name in _roll_forward(path)]
                continue
            except ValueError:  # a journal cut short is never written: rename makes it whole
                pass
        if path.is_dir() and not path.is_symlink():
            _discard(path)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return finished, removed
