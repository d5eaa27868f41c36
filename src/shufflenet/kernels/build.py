"""Build this project's C++ CPU kernels once per machine and source version, into a cache.

MindSpore's aot custom operators load a shared library by path. Each kernel source is compiled
with the system's C++ compiler (`CXX`, else g++) for the baseline instruction set of the
machine's architecture, so a cache shared by a cluster's nodes works on every one of them. The
library's name carries a hash of its source, flags and compiler: an edited source or another
compiler builds anew. Builds are atomic (a temporary name, then a rename) and verified by
loading the library and finding its entry points, so a concurrent rank or a killed build never
leaves a broken library under the final name; a damaged cached file is rebuilt.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from ..utils.files import atomic_path

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


class KernelUnavailable(RuntimeError):
    """The CPU kernels cannot be built or loaded here; the message says why and what to do."""


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
    """`NAME-HASH.so`, the hash over everything that decides the library's contents."""
    digest = hashlib.sha256()
    for part in (name + ".cc", *HEADERS):
        digest.update((SOURCE_DIR / part).read_bytes())
    digest.update(" ".join((*CXX_FLAGS, _compiler_version(compiler), platform.machine())).encode())
    return f"{name}-{digest.hexdigest()[:16]}.so"


def _verify(path: Path, name: str) -> None:
    """Loads the library and finds its entry points. The ELF check comes first because the
    dynamic loader answers a path it has loaded before from memory, not from the file."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                raise OSError("not an ELF shared library")
        library = ctypes.CDLL(str(path))
        for symbol in KERNELS[name]:
            getattr(library, symbol)
    except (OSError, AttributeError) as err:
        raise KernelUnavailable(f"{path} is not a usable {name} kernel library ({err})") from None


def _compile(name: str, compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        command = [compiler, *CXX_FLAGS, "-I", str(SOURCE_DIR), "-o", str(tmp),
                   str(SOURCE_DIR / f"{name}.cc")]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise KernelUnavailable(f"{compiler} could not build the {name} kernel:\n{tail}")
        _verify(tmp, name)


@functools.cache
def kernel_library(name: str) -> Path:
    """The compiled library of kernel `name` (see `KERNELS`), built on first use."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    compiler = find_compiler()
    target = cache_dir() / library_name(name, compiler)
    try:
        _verify(target, name)
        return target
    except KernelUnavailable:  # not built yet, or a damaged file: (re)built under a new inode
        pass
    try:
        _compile(name, compiler, target)
    except OSError as err:
        raise KernelUnavailable(f"cannot write the {name} kernel to {target.parent} ({err}); "
                                f"set {CACHE_ENV} to a writable folder") from None
    return target
