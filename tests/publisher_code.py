"""The publishers' own PyTorch model code, torchvision 0.28.0's and timm 1.0.31's, for parity tests.

Why not `pip install`: torchvision's wheel is a CUDA build that fails to import with the CPU
PyTorch, and timm's requirements would pull another torch and torchvision. Only the two modules
that register kernels for torchvision's missing C++ operators (`_meta_registrations`,
`_autograd_registrations`) stop the import, and the model files need neither those kernels nor
the compiled extensions. So `python tests/publisher_code.py` downloads the two pinned wheels
(`pip download --no-deps`, the same wheel files on every machine, SHA-256 checked) and unpacks
only their Python files into `$SHUFFLENET_PUBLISHER_CODE` (default
`~/.cache/shufflenet-mindspore/publisher-code`); `import_publishers()` imports them from there
with those two modules stubbed. The installed torch is left as it is.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType

#: name -> (version, the wheel pip is asked for, its SHA-256). torchvision's Python files are the
#: same in every platform's wheel; one platform's is pinned so its digest holds everywhere.
WHEELS = {
    "torchvision": ("0.28.0", "torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                    "7e80f543b22503d9415e126db5f0ff3917036925e38560ee6b9ae38c571a4002"),
    "timm": ("1.0.31", "timm-1.0.31-py3-none-any.whl",
             "5bd50f7d0fe6d09bf9285ac2523234a1b7e6bf075c0be3e7aed09139fcb617c7"),
}
PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311", "--only-binary=:all:"]
#: torchvision modules that register kernels for its C++ operators; imported as empty modules.
STUBBED = ("torchvision._meta_registrations", "torchvision._autograd_registrations")
ENV = "SHUFFLENET_PUBLISHER_CODE"
#: written last, so a half-unpacked folder is never taken for the code.
MARKER = "UNPACKED"


def code_folder() -> Path:
    """Where the unpacked Python files of both wheels live, one folder per pair of versions."""
    root = Path(os.environ.get(ENV) or Path.home() / ".cache" / "shufflenet-mindspore" / "publisher-code")
    return root / "+".join(f"{name}-{version}" for name, (version, _, _) in WHEELS.items())


def fetch() -> Path:
    """Download both wheels, check their digests and unpack their `.py` files; idempotent."""
    folder = code_folder()
    if (folder / MARKER).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        wheels, staged = Path(scratch) / "wheels", Path(scratch) / "code"
        requirements = [f"{name}=={version}" for name, (version, _, _) in WHEELS.items()]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *PLATFORM,
                        "-d", str(wheels), *requirements], check=True)
        for name, (_, file_name, digest) in WHEELS.items():
            wheel = wheels / file_name
            found = hashlib.sha256(wheel.read_bytes()).hexdigest()
            if found != digest:
                raise RuntimeError(f"{file_name}: SHA-256 {found}, expected {digest}")
            with zipfile.ZipFile(wheel) as archive:  # extract() keeps every path inside `staged`
                members = [m for m in archive.namelist() if m.startswith(f"{name}/") and m.endswith(".py")]
                archive.extractall(staged, members)
        (staged / MARKER).write_text("\n".join(f"{f} {d}" for _, f, d in WHEELS.values()) + "\n")
        try:
            staged.rename(folder)  # atomic: another process may have finished first
        except OSError:
            if not (folder / MARKER).is_file():
                raise
    return folder


def import_publishers() -> tuple[ModuleType, ModuleType]:
    """torchvision and timm imported from `code_folder()`, or FileNotFoundError saying how to get them."""
    folder = code_folder()
    if not (folder / MARKER).is_file():
        raise FileNotFoundError(f"the publishers' model code is not in {folder}; run "
                                f"`python tests/publisher_code.py` (or set {ENV})")
    for name in STUBBED:
        sys.modules.setdefault(name, ModuleType(name))
    sys.path.insert(0, str(folder))
    try:
        import timm
        import torchvision
    finally:
        sys.path.remove(str(folder))
    for module in (torchvision, timm):
        version = WHEELS[module.__name__][0]
        if not module.__version__.startswith(version) or folder not in Path(module.__file__).parents:
            raise ImportError(f"{module.__name__} {module.__version__} from {module.__file__} is "
                              f"not {version} from {folder}")
    return torchvision, timm


if __name__ == "__main__":
    print(fetch())
