"""Build this project's C++ CPU kernels once per machine and source version into a cache, and
hand MindSpore only libraries whose bytes were checked first.

MindSpore's aot custom operators load a shared library by path, and loading a library runs its
start-up code. So nothing here loads a library to check it, and MindSpore never loads a file
that someone else could have written or swapped.

Trusted: this user and root; the C++ compiler (`CXX`, else g++) and the kernel sources shipped
with the package; and, for a cache folder another user owns (a cluster's shared cache), that
owner. Nobody else.

Checked before any byte reaches a loader:

- The cache folder (`$SHUFFLENET_KERNEL_CACHE`, else `$XDG_CACHE_HOME` or ~/.cache, then
  shufflenet/kernels). Ours: created 0700, and the default folder is tightened to 0700; a
  folder named in `$SHUFFLENET_KERNEL_CACHE` is not changed (it may be a team's folder, or a
  cache its owner shares read-only) but refused while group or others can write it. Another
  user's or root's: used read-only, and refused when group or others can write it, or can
  write or own a folder above it (and so put another folder in its place).
- Each library, `NAME-HASH.so`, and its digest, `NAME-HASH.so.sha256`: opened once, through the
  checked folder's descriptor and without following links; a regular file that group and others
  cannot write, owned by this user, root or the shared cache's owner; its bytes hash to the
  SHA-256 recorded when it was built, and an ELF parser finds a shared object for this machine
  exporting the kernel's entry points.
- Those same bytes are then written to a folder private to this process (mkdtemp, 0700), which
  MindSpore's `MS_CUSTOM_AOT_WHITE_LIST` names; MindSpore loads that copy, so nothing can be
  swapped between the check and the load.

A library that fails a check in our own cache (missing, cut, planted, a link, another's file)
is rebuilt: compiled in a private temporary folder, checked, then written under a temporary
name and renamed over the old one (a new inode; a killed build leaves the old file or the new
one). Nothing is written to a shared cache: a library missing or failing there is an error that
says to ask its owner to fill it (`shufflenet build-kernels --cache-dir DIR --shared`), or to
set `$SHUFFLENET_KERNEL_CACHE` to a private folder. Every refusal is `KernelUnavailable`: with
`cpu_kernels: auto` training logs it and uses MindSpore's kernels, `on` stops.

Each kernel is compiled for the baseline instruction set of the machine's architecture, so a
cache shared by a cluster's nodes works on each. The name's hash covers the source, flags and
compiler: an edited source or another compiler builds anew.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import functools
import hashlib
import hmac
import io
import os
import platform
import pwd
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

SOURCE_DIR = Path(__file__).parent
#: Kernel source (SOURCE_DIR/NAME.cc) -> the functions its library must export.
KERNELS = {
    "pool": ("MaxPoolForward", "MaxPoolBackward", "AvgPoolForward", "AvgPoolBackward"),
    "depthwise": ("DepthwiseForward", "DepthwiseBackward"),
    "batchnorm": ("BatchNormForward", "BatchNormBackward"),
}
HEADERS = ("parallel.h",)
CXX_FLAGS = ("-O3", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-pthread")
#: Where the libraries go (default: $XDG_CACHE_HOME or ~/.cache, then shufflenet/kernels).
CACHE_ENV = "SHUFFLENET_KERNEL_CACHE"
#: MindSpore's folder for aot libraries: it refuses to load one from anywhere else.
WHITE_LIST_ENV = "MS_CUSTOM_AOT_WHITE_LIST"
#: The command that fills a cache, for the messages.
FILL_COMMAND = "shufflenet build-kernels"
DIGEST_SUFFIX = ".sha256"
MAX_LIBRARY_BYTES = 64 << 20
#: platform.machine() -> the ELF e_machine of a library built here.
ELF_MACHINES = {"x86_64": "EM_X86_64", "amd64": "EM_X86_64", "aarch64": "EM_AARCH64",
                "arm64": "EM_AARCH64", "ppc64le": "EM_PPC64", "s390x": "EM_S390",
                "riscv64": "EM_RISCV", "loongarch64": "EM_LOONGARCH"}
#: statvfs flag of a file system that cannot map code (absent off Linux).
_NOEXEC = getattr(os, "ST_NOEXEC", 0)
#: What a parser of damaged or hostile bytes may raise.
_PARSE_ERRORS = (ELFError, ValueError, OverflowError, IndexError, KeyError, EOFError, struct.error)


class KernelUnavailable(RuntimeError):
    """The CPU kernels cannot be built or loaded here; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class CacheFolder:
    """A checked cache folder: its path, the descriptor it was checked through, its owner and
    whether this process may write to it (only when it is ours)."""
    path: Path
    fd: int
    owner: int
    writable: bool


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shufflenet" / "kernels"


def find_compiler() -> str:
    """Absolute path of the C++ compiler (`CXX`, else g++)."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise KernelUnavailable(
            f"no C++ compiler: {name!r} (from CXX, else g++) is not on PATH; install g++ "
            "(apt install g++, yum install gcc-c++) or set CXX, or turn the kernels off "
            "(--cpu-kernels off)")
    return path


@functools.cache
def _compiler_version(compiler: str) -> str:
    done = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else compiler


def library_name(name: str, compiler: str) -> str:
    """`NAME-HASH.so`, the hash over everything that decides the library's contents. Anyone can
    compute it: the name only finds a library, its checks decide whether it is used."""
    digest = hashlib.sha256()
    for part in (name + ".cc", *HEADERS):
        digest.update((SOURCE_DIR / part).read_bytes())
    digest.update(" ".join((*CXX_FLAGS, _compiler_version(compiler), platform.machine())).encode())
    return f"{name}-{digest.hexdigest()[:16]}.so"


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _writers(mode: int) -> str:
    """Who besides the owner may write, for messages: 'group', 'others' or both."""
    return " and ".join(who for who, bit in (("group", 0o020), ("others", 0o002)) if mode & bit)


# --- the cache folder -------------------------------------------------------------------------

def _make_private(folder: Path) -> None:
    """Creates the cache folder 0700 (its parents as usual); one that exists is checked later."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise KernelUnavailable(f"cannot create the kernel cache {folder} ({err.strerror}); set "
                                f"{CACHE_ENV} to a private folder you can write") from None


def _ancestor_problem(folder: Path, fd: int, owner: int) -> str:
    """Why a folder above another user's cache lets a third party replace the cache, or ''."""
    real = Path(os.path.realpath(folder))
    here, there = os.fstat(fd), os.stat(real)
    if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
        return f"{folder} changed while it was being checked"
    trusted = {0, os.geteuid(), owner}
    for parent in real.parents:
        info = os.stat(parent)
        if info.st_uid not in trusted:
            return f"the folder above it, {parent}, belongs to {_user(info.st_uid)}"
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            return (f"the folder above it, {parent}, is writable by {_writers(info.st_mode)} "
                    "(who could put another folder in its place)")
    return ""


def _check_folder(folder: Path, fd: int, private: bool) -> CacheFolder:
    """Ours: tightened (see the module's docstring) and writable. Another's: read-only, and
    only when nobody else could have written it."""
    info = os.fstat(fd)
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        raise KernelUnavailable(f"the kernel cache {folder} is not a folder; set {CACHE_ENV} to a "
                                "private folder")
    if info.st_uid == os.geteuid():
        if private and mode != 0o700:  # the default folder: ours alone by its name
            os.fchmod(fd, 0o700)
        elif not private and mode & 0o022:  # a folder named by the user may be shared on purpose
            raise KernelUnavailable(
                f"the kernel cache {folder} is yours but writable by {_writers(mode)} (mode {mode:o}): "
                f"anyone could have planted a library there, so it is not used; make it yours alone "
                f"(chmod go-w {folder}) or set {CACHE_ENV} to a folder of its own")
        return CacheFolder(folder, fd, info.st_uid, writable=True)
    fix = (f"set {CACHE_ENV} to a private folder, or ask its owner to publish it read-only "
           f"({FILL_COMMAND} --cache-dir {folder} --shared)")
    if mode & 0o022:
        raise KernelUnavailable(f"the kernel cache {folder} belongs to {_user(info.st_uid)} and is "
                                f"writable by {_writers(mode)} (mode {mode:o}): anyone could plant a "
                                f"library there, so it is not used; {fix}")
    problem = _ancestor_problem(folder, fd, info.st_uid)
    if problem:
        raise KernelUnavailable(f"the kernel cache {folder} belongs to {_user(info.st_uid)}, but "
                                f"{problem}, so it is not used; {fix}")
    return CacheFolder(folder, fd, info.st_uid, writable=False)


@contextlib.contextmanager
def open_cache(folder: Path, private: bool) -> Iterator[CacheFolder]:
    """The cache folder, created if missing, checked through one descriptor that every later
    file access goes through. `private`: the default folder, which is ours alone (0700)."""
    if not os.path.lexists(folder):
        _make_private(folder)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise KernelUnavailable(f"cannot open the kernel cache {folder} ({err.strerror}); set "
                                f"{CACHE_ENV} to a private folder") from None
    try:
        try:
            cache = _check_folder(folder, fd, private)
        except OSError as err:
            raise KernelUnavailable(f"cannot check the kernel cache {folder} ({err}); set {CACHE_ENV} "
                                    "to a private folder") from None
        yield cache
    finally:
        os.close(fd)


# --- checking a library from its bytes ----------------------------------------------------------

def _file_problem(info: os.stat_result, cache: CacheFolder) -> str:
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_uid not in {os.geteuid(), 0, cache.owner}:
        return f"belongs to {_user(info.st_uid)}, not to you, root or the cache's owner"
    if info.st_mode & 0o022:
        return f"is writable by {_writers(info.st_mode)}"
    if info.st_size > MAX_LIBRARY_BYTES:
        return f"is larger than {MAX_LIBRARY_BYTES >> 20} MiB"
    return ""


def _read_checked(cache: CacheFolder, filename: str) -> bytes:
    """The bytes of one file of the cache, opened once without following a link, after checking
    what was opened: a regular file of a trusted owner that others cannot write."""
    where = cache.path / filename
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(filename, flags, dir_fd=cache.fd)
    except FileNotFoundError:
        raise KernelUnavailable(f"{where} does not exist") from None
    except OSError as err:
        why = "is a symbolic link" if err.errno == errno.ELOOP else f"cannot be read ({err.strerror})"
        raise KernelUnavailable(f"{where} {why}") from None
    try:
        problem = _file_problem(os.fstat(fd), cache)
        if problem:
            raise KernelUnavailable(f"{where} {problem}")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_LIBRARY_BYTES:
                raise KernelUnavailable(f"{where} is larger than {MAX_LIBRARY_BYTES >> 20} MiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_elf(data: bytes, name: str, where: str) -> None:
    """`data` is an ELF shared object for this machine exporting kernel `name`'s functions;
    read by a parser, never by the dynamic loader (which would run the library's code)."""
    try:
        elf = ELFFile(io.BytesIO(data))
        header = elf.header
        machine = ELF_MACHINES.get(platform.machine().lower())
        if header["e_type"] != "ET_DYN" or elf.elfclass != struct.calcsize("P") * 8 or (
                machine and header["e_machine"] != machine):
            raise KernelUnavailable(f"{where} is not a shared library for this machine "
                                    f"({header['e_type']}, {header['e_machine']}, {elf.elfclass}-bit)")
        table = elf.get_section_by_name(".dynsym")
        exported = {symbol.name for symbol in (table.iter_symbols() if table else ())
                    if symbol["st_shndx"] != "SHN_UNDEF" and symbol["st_info"]["type"] == "STT_FUNC"
                    and symbol["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")}
    except _PARSE_ERRORS as err:
        raise KernelUnavailable(f"{where} is not a readable ELF shared library ({err})") from None
    missing = [symbol for symbol in KERNELS[name] if symbol not in exported]
    if missing:
        raise KernelUnavailable(f"{where} does not export {', '.join(missing)}")


def verified_library(cache: CacheFolder, filename: str, name: str) -> bytes:
    """The bytes of a cached library that passed every check, from one read of the file."""
    data = _read_checked(cache, filename)
    record = _read_checked(cache, filename + DIGEST_SUFFIX)
    recorded = record.split(maxsplit=1)[0].decode("ascii", "replace") if record.strip() else ""
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), recorded):
        raise KernelUnavailable(f"{cache.path / filename} does not match the digest recorded when "
                                f"it was built ({filename + DIGEST_SUFFIX})")
    check_elf(data, name, str(cache.path / filename))
    return data


# --- building and publishing ---------------------------------------------------------------------

def _private_tempdir(parent: Path, prefix: str) -> Path:
    """A new 0700 folder in `parent`, which others cannot rename away (sticky, or not theirs
    to write)."""
    info = os.stat(parent)
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise KernelUnavailable(f"{parent} is writable by {_writers(info.st_mode)} without the sticky "
                                "bit; set TMPDIR to a private folder")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _compile(name: str, compiler: str) -> bytes:
    """The library of kernel `name`, compiled in a private temporary folder and checked."""
    folder = _private_tempdir(Path(tempfile.gettempdir()), "shufflenet-build-")
    try:
        output = folder / f"{name}.so"
        command = [compiler, *CXX_FLAGS, "-I", str(SOURCE_DIR), "-o", str(output),
                   str(SOURCE_DIR / f"{name}.cc")]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise KernelUnavailable(f"{compiler} could not build the {name} kernel:\n{tail}")
        data = output.read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    check_elf(data, name, f"the {name} library {compiler} built")
    return data


def _write_atomic(cache: CacheFolder, filename: str, data: bytes) -> None:
    """`data` under `filename` in the cache: a new file under a temporary name, flushed, then
    renamed over whatever was there (a link or a planted file is replaced, not followed)."""
    tmp = f".{filename}.tmp-{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=cache.fd)  # left by a killed run of this pid
    fd = os.open(tmp, flags, 0o644, dir_fd=cache.fd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as handle:
            handle.write(data)
        os.fchmod(fd, 0o644)  # readable when the folder is shared; the folder decides who reads
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, filename, src_dir_fd=cache.fd, dst_dir_fd=cache.fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=cache.fd)
        raise


def publish(cache: CacheFolder, filename: str, data: bytes) -> None:
    """Writes a checked library and then its digest (`sha256sum -c` reads it) to our cache."""
    try:
        _write_atomic(cache, filename, data)
        digest = f"{hashlib.sha256(data).hexdigest()}  {filename}\n".encode("ascii")
        _write_atomic(cache, filename + DIGEST_SUFFIX, digest)
    except OSError as err:
        raise KernelUnavailable(f"cannot write {filename} to the kernel cache {cache.path} "
                                f"({err.strerror}); set {CACHE_ENV} to a private folder you can "
                                "write") from None


def _shared_cache_message(cache: CacheFolder, why: str) -> str:
    return (f"{why}, and the kernel cache {cache.path} belongs to {_user(cache.owner)}, who alone "
            f"writes it; ask its owner to fill it ({FILL_COMMAND} --cache-dir {cache.path} "
            f"--shared), or set {CACHE_ENV} to a private folder")


def library_bytes(cache: CacheFolder, name: str, compiler: str) -> tuple[bytes, bool]:
    """The checked bytes of kernel `name` and whether they were built now: the cached library
    when it passes every check, else (our cache only) a new build written over it."""
    filename = library_name(name, compiler)
    try:
        return verified_library(cache, filename, name), False
    except KernelUnavailable as err:
        if not cache.writable:
            raise KernelUnavailable(_shared_cache_message(cache, str(err))) from None
    data = _compile(name, compiler)
    publish(cache, filename, data)
    return data, True


# --- the copy MindSpore loads ----------------------------------------------------------------------

#: pid -> the folder that process loads libraries from; the white list value this module set.
_LOAD_FOLDERS: dict[int, Path] = {}
_WHITE_LIST_SET: list[str] = []


def _load_parent(fallback: Path | None) -> tuple[Path, bool]:
    """Where the private load folder goes, and whether it is the user's own white list: that
    folder when `MS_CUSTOM_AOT_WHITE_LIST` names one, else the temporary folder (else
    `fallback`, our cache, when the temporary folder is mounted noexec)."""
    chosen = os.environ.get(WHITE_LIST_ENV)
    if chosen and chosen not in _WHITE_LIST_SET:
        parent = Path(os.path.realpath(chosen))
        if not parent.is_dir() or os.statvfs(parent).f_flag & _NOEXEC:
            raise KernelUnavailable(f"{WHITE_LIST_ENV}={chosen} is not a folder libraries can be loaded "
                                    f"from; unset it or name an existing folder on an exec-mounted disk")
        return parent, True
    for parent in (Path(tempfile.gettempdir()), fallback):
        if parent is not None and not os.statvfs(parent).f_flag & _NOEXEC:
            return parent, False
    raise KernelUnavailable(f"the temporary folder {tempfile.gettempdir()} is mounted noexec, so no "
                            "library can be loaded from it; set TMPDIR to a folder on an exec-mounted disk")


def _remove_load_folder(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child
        shutil.rmtree(folder, ignore_errors=True)


def load_folder(fallback: Path | None = None) -> Path:
    """This process's private folder (0700) that MindSpore loads the kernels from, removed at
    exit; MindSpore's white list names it (or the user's white list holds it)."""
    pid = os.getpid()
    if pid not in _LOAD_FOLDERS:
        parent, users = _load_parent(fallback)
        folder = Path(os.path.realpath(_private_tempdir(parent, f"shufflenet-kernels-{pid}-")))
        atexit.register(_remove_load_folder, folder, pid)
        if not users:
            os.environ[WHITE_LIST_ENV] = str(folder)
            _WHITE_LIST_SET.append(str(folder))
        _LOAD_FOLDERS[pid] = folder
    return _LOAD_FOLDERS[pid]


def private_copy(filename: str, data: bytes, fallback: Path | None = None) -> Path:
    """The checked bytes written to this process's load folder; the path MindSpore loads. The
    name carries their digest: other bytes never take a path the loader may have seen."""
    folder = load_folder(fallback)
    target = folder / f"{Path(filename).stem}-{hashlib.sha256(data).hexdigest()[:16]}.so"
    if not target.exists():
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return target


# --- entry points ---------------------------------------------------------------------------------

@functools.cache
def kernel_library(name: str) -> Path:
    """The library of kernel `name` (see `KERNELS`) for MindSpore to load: a private copy of
    bytes checked in the cache, built there first when needed."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    compiler = find_compiler()
    try:
        with open_cache(cache_dir(), private=not os.environ.get(CACHE_ENV)) as cache:
            data, _ = library_bytes(cache, name, compiler)
            fallback = cache.path if cache.writable else None
            return private_copy(library_name(name, compiler), data, fallback)
    except OSError as err:  # a full or read-only temporary folder, say
        raise KernelUnavailable(f"cannot prepare the {name} kernel ({err}); free the space or "
                                "fix the permissions it names, or turn the kernels off "
                                "(--cpu-kernels off)") from None


def fill_cache(folder: Path | None = None, shared: bool = False) -> list[tuple[Path, bool]]:
    """Builds into `folder` (default: `cache_dir()`, which must be ours) every kernel library
    that is missing or fails its checks; returns each library's path and whether it was built.
    `shared`: the folder becomes 0755, for other users to use read-only."""
    compiler = find_compiler()
    folder = folder or cache_dir()
    private = not shared and folder == cache_dir() and not os.environ.get(CACHE_ENV)
    with open_cache(folder, private) as cache:
        if not cache.writable:
            raise KernelUnavailable(f"the kernel cache {folder} belongs to {_user(cache.owner)}: only "
                                    f"its owner can fill it ({FILL_COMMAND} --cache-dir {folder})")
        if shared:
            os.fchmod(cache.fd, 0o755)
            problem = _ancestor_problem(folder, cache.fd, cache.owner)
            if problem:
                raise KernelUnavailable(f"other users would refuse {folder}: {problem}; share a "
                                        "folder whose parents only you or root can write")
        return [(cache.path / library_name(name, compiler), library_bytes(cache, name, compiler)[1])
                for name in KERNELS]
