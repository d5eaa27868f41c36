"""The kernel cache against hostile inputs, through the real build and the real command.

A look-alike library (the kernels' exported functions, and a constructor that writes a marker
file when anything loads it) is planted where the build looks: in a folder others can write, in
our own folder without or with a wrong recorded digest, behind a link. It must never run. A cut
library must be rebuilt, never mapped. Another user's read-only cache is used without a byte
written to it; a library missing there is a message that says who can fill it and how.

"Another user" is uid 65534 (nobody), made owner with os.chown: these tests need root.
"""
import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_image_folder
from mindspore import ops

from shufflenet.cli import main as cli_main
from shufflenet.kernels import KernelUnavailable, kernel_library
from shufflenet.kernels import build as kb

OTHER, THIRD = 65534, 65533
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files needs root")

PLANTED_SOURCE = r"""
#include <cstdio>
__attribute__((constructor)) static void planted() {
  if (FILE *f = std::fopen(MARKER, "w")) { std::fputs("planted code ran\n", f); std::fclose(f); }
}
"""


def _write(path: Path, text: str) -> None:
    """A file others cannot write, whatever the umask."""
    path.write_text(text)
    os.chmod(path, 0o644)


def _chown(path: Path, uid: int) -> None:
    os.chown(path, uid, uid, follow_symlinks=False)


def _snapshot(folder: Path) -> dict:
    """Every entry of a folder with what a write would change."""
    return {p.name: (p.lstat().st_ino, p.lstat().st_mtime_ns, p.lstat().st_mode, p.lstat().st_uid)
            for p in [folder, *folder.iterdir()]}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Path]:
    """The three real libraries (and their digests), built once: kernel -> library path."""
    folder = tmp_path_factory.mktemp("real") / "kernels"
    return {path.name.split("-")[0]: path for path, _ in kb.fill_cache(folder)}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    """Look-alike libraries (kernel -> path) whose start-up code writes the marker file (second)."""
    folder = tmp_path_factory.mktemp("planted")
    marker = folder / "PLANTED-CODE-RAN"
    libraries = {}
    for name, symbols in kb.KERNELS.items():
        source = folder / f"{name}.cc"
        source.write_text(PLANTED_SOURCE + "".join(
            f'extern "C" int {s}(int, void **, int *, long **, const char **, void *, void *) '
            "{ return 0; }\n" for s in symbols))
        libraries[name] = folder / f"{name}.so"
        subprocess.run(["g++", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(libraries[name]),
                        str(source)], check=True)
        kb.check_elf(libraries[name].read_bytes(), name, "planted")  # a true look-alike
    # The tripwire works: loading a planted library runs its code (in another process).
    subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])",
                    str(libraries["pool"])], check=True)
    assert marker.read_text() == "planted code ran\n"
    marker.unlink()
    return libraries, marker


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """$SHUFFLENET_KERNEL_CACHE for the test (not created), the process-wide memo cleared."""
    folder = tmp_path / "kernels"
    monkeypatch.setenv(kb.CACHE_ENV, str(folder))
    kernel_library.cache_clear()
    yield folder
    kernel_library.cache_clear()


def _fill(folder: Path, real: dict[str, Path], mode: int = 0o700) -> None:
    """`folder` holding copies of the real libraries and their digests."""
    folder.mkdir(exist_ok=True)
    for path in real.values():
        for file in (path, path.with_name(path.name + kb.DIGEST_SUFFIX)):
            shutil.copyfile(file, folder / file.name)
            os.chmod(folder / file.name, 0o644)
    os.chmod(folder, mode)


def _plant(folder: Path, planted: dict[str, Path], real: dict[str, Path], uid: int, digest: str) -> None:
    """Look-alikes under the real libraries' names, owned by `uid`, with a digest file that is
    `digest`: 'matching' (the planted bytes'), 'wrong' (the real library's) or 'none'."""
    for name, source in planted.items():
        target = folder / real[name].name
        target.unlink(missing_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
        record = folder / (target.name + kb.DIGEST_SUFFIX)
        record.unlink(missing_ok=True)
        if digest != "none":
            hashed = source if digest == "matching" else real[name]
            _write(record, f"{hashlib.sha256(hashed.read_bytes()).hexdigest()}  {target.name}\n")
            _chown(record, uid)
        _chown(target, uid)


def _loads_the_real_library(path: Path, real: Path, marker: Path) -> None:
    """What kernel_library handed over is a copy of the real bytes in the private load folder,
    and loading it (as MindSpore will) runs no planted code."""
    assert path.parent == kb.load_folder() and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes() == real.read_bytes()
    ctypes.CDLL(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("owner", [OTHER, 0], ids=["another user's", "ours"])
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777], ids=["0777", "0775", "sticky 1777"])
def test_a_planted_library_in_a_folder_others_can_write_is_refused_unrun(cache, real, planted, mode, owner):
    libraries, marker = planted
    cache.mkdir()
    _plant(cache, libraries, real, OTHER, "matching")
    os.chmod(cache, mode)
    _chown(cache, owner)
    before = _snapshot(cache)
    with pytest.raises(KernelUnavailable) as refused:
        kernel_library("pool")
    message = str(refused.value)
    whose = f"belongs to {kb._user(OTHER)} and is" if owner else "is yours but"
    assert message.startswith(f"the kernel cache {cache} {whose} writable by group"), message
    assert f"set {kb.CACHE_ENV} to a" in message and "\n" not in message
    assert _snapshot(cache) == before and not marker.exists()


@pytest.fixture
def default_cache(tmp_path, monkeypatch) -> Path:
    """The default cache folder (no $SHUFFLENET_KERNEL_CACHE), under a temporary XDG_CACHE_HOME."""
    monkeypatch.delenv(kb.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    kernel_library.cache_clear()
    yield tmp_path / "xdg" / "shufflenet" / "kernels"
    kernel_library.cache_clear()


@pytest.mark.parametrize("owner, digest", [(OTHER, "matching"), (0, "none"), (0, "wrong")],
                         ids=["another user's, its own digest", "ours, no digest", "ours, a wrong digest"])
def test_a_planted_library_in_our_folder_is_rebuilt_never_run(default_cache, real, planted, owner, digest):
    libraries, marker = planted
    default_cache.mkdir(parents=True)
    os.chmod(default_cache, 0o777)  # our default folder, but others could write it: made private
    _plant(default_cache, libraries, real, owner, digest)
    planted_inode = (default_cache / real["pool"].name).stat().st_ino
    path = kernel_library("pool")
    assert stat.S_IMODE(default_cache.stat().st_mode) == 0o700
    rebuilt = default_cache / real["pool"].name
    assert rebuilt.stat().st_ino != planted_inode and rebuilt.stat().st_uid == 0
    assert rebuilt.read_bytes() == real["pool"].read_bytes()
    _loads_the_real_library(path, real["pool"], marker)
    assert not [p for p in default_cache.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("digest", ["recorded when built", "of the cut bytes"])
def test_a_cut_library_is_rebuilt_not_loaded(cache, real, planted, digest):
    _fill(cache, real)
    library = cache / real["pool"].name
    with open(library, "r+b") as handle:  # cut in place, as a full disk or a killed copy leaves it
        handle.truncate(3000)
    if digest == "of the cut bytes":  # the digest agrees: the ELF parser must catch it
        _write(cache / (library.name + kb.DIGEST_SUFFIX), hashlib.sha256(library.read_bytes()).hexdigest())
    why = "does not match the digest" if digest == "recorded when built" else "not a readable ELF shared"
    with kb.open_cache(cache, private=False) as folder, pytest.raises(KernelUnavailable, match=why):
        kb.verified_library(folder, library.name, "pool")
    path = kernel_library("pool")  # no SIGBUS: nothing maps the cut file
    assert library.read_bytes() == real["pool"].read_bytes()
    _loads_the_real_library(path, real["pool"], planted[1])


@pytest.mark.parametrize("which", ["library", "digest"])
def test_a_link_in_the_cache_is_replaced_not_followed(cache, real, planted, which, tmp_path):
    """The link leads to a look-alike and its digest: following it would pass every check."""
    libraries, marker = planted
    _fill(cache, real)
    library = cache / real["pool"].name
    record = cache / (library.name + kb.DIGEST_SUFFIX)
    bait = tmp_path / ("bait.so" if which == "library" else "bait.sha256")
    if which == "library":
        shutil.copyfile(libraries["pool"], bait)
        _write(record, hashlib.sha256(bait.read_bytes()).hexdigest() + "\n")
    else:
        library.unlink()
        shutil.copyfile(libraries["pool"], library)
        os.chmod(library, 0o644)
        _write(bait, hashlib.sha256(library.read_bytes()).hexdigest() + "\n")
    link = library if which == "library" else record
    link.unlink()
    link.symlink_to(bait)
    kept = bait.read_bytes()
    path = kernel_library("pool")
    assert not link.is_symlink() and bait.read_bytes() == kept
    assert library.read_bytes() == real["pool"].read_bytes()
    _loads_the_real_library(path, real["pool"], marker)


@pytest.fixture
def shared(tmp_path, real, monkeypatch) -> Path:
    """A cache filled and published by its owner, uid 65534, in a folder only root can write."""
    folder = tmp_path / "cluster" / "kernels"
    folder.parent.mkdir(mode=0o755)
    _fill(folder, real, 0o755)
    for path in [folder, *folder.iterdir()]:
        _chown(path, OTHER)
    monkeypatch.setenv(kb.CACHE_ENV, str(folder))
    kernel_library.cache_clear()
    yield folder
    kernel_library.cache_clear()


def test_another_users_read_only_cache_is_used_without_writing_to_it(shared, real, planted):
    before = _snapshot(shared)
    for name in kb.KERNELS:
        _loads_the_real_library(kernel_library(name), real[name], planted[1])
    assert _snapshot(shared) == before


def _refusal(folder: Path) -> str:
    before = _snapshot(folder)
    with pytest.raises(KernelUnavailable) as refused:
        kernel_library("pool")
    assert _snapshot(folder) == before  # nothing written, nothing rebuilt
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_missing_or_failing_library_in_a_shared_cache_says_who_can_fill_it(shared, real, planted):
    library = shared / real["pool"].name
    library.unlink()
    message = _refusal(shared)
    assert message.startswith(f"{library} does not exist, and the kernel cache {shared} belongs to "
                              f"{kb._user(OTHER)}, who alone writes it; ask its owner to fill it (shufflenet "
                              f"build-kernels --cache-dir {shared} --shared), or set {kb.CACHE_ENV} to "
                              "a private folder"), message
    library.symlink_to(real["pool"])
    assert f"{library} is a symbolic link, and the kernel cache" in _refusal(shared)
    library.unlink()
    shutil.copyfile(planted[0]["pool"], library)
    os.chmod(library, 0o644)
    _chown(library, OTHER)
    assert "does not match the digest recorded" in _refusal(shared)
    shutil.copyfile(real["pool"], library)
    _chown(library, THIRD)  # a file of a third user
    assert f"{library} belongs to uid {THIRD}, not to you, root or the cache's owner" in _refusal(shared)
    assert not planted[1].exists()


def test_a_shared_cache_someone_else_could_replace_is_refused(shared):
    os.chmod(shared.parent, 0o777)  # anyone could move the folder away and put theirs there
    assert (f"the folder above it, {shared.parent}, is writable by group and others (who could put "
            "another folder in its place)") in _refusal(shared)
    os.chmod(shared.parent, 0o755)
    _chown(shared.parent, THIRD)
    assert f"the folder above it, {shared.parent}, belongs to uid {THIRD}" in _refusal(shared)


def test_build_kernels_publishes_a_cache_only_its_owner_fills(tmp_path, real, capsys, monkeypatch):
    monkeypatch.delenv(kb.CACHE_ENV, raising=False)
    folder = tmp_path / "published"
    _fill(folder, real)
    assert cli_main.main(["build-kernels", "--cache-dir", str(folder), "--shared"]) == 0
    out = capsys.readouterr().out
    assert out.count("verified, kept") == 3 and f"export {kb.CACHE_ENV}={folder}" in out
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}
    _chown(folder, OTHER)
    assert cli_main.main(["build-kernels", "--cache-dir", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err == (f"shufflenet build-kernels: error: the kernel cache {folder} belongs to "
                   f"{kb._user(OTHER)}: only its owner can fill it (shufflenet build-kernels --cache-dir "
                   f"{folder})\n")


def test_our_default_cache_is_private_and_a_named_one_is_left_as_it_is(default_cache, real, tmp_path,
                                                                      monkeypatch):
    default_cache.parent.mkdir(parents=True)
    _fill(default_cache, real, 0o755)
    kernel_library("pool")
    assert stat.S_IMODE(default_cache.stat().st_mode) == 0o700  # tightened
    shutil.rmtree(default_cache)
    old = os.umask(0)
    try:
        kernel_library.cache_clear()
        kernel_library("batchnorm")  # built into a new folder, created private whatever the umask
    finally:
        os.umask(old)
    assert stat.S_IMODE(default_cache.stat().st_mode) == 0o700
    named = tmp_path / "named"  # perhaps a team's folder, or a cache published read-only
    _fill(named, real, 0o755)
    monkeypatch.setenv(kb.CACHE_ENV, str(named))
    kernel_library.cache_clear()
    kernel_library("pool")
    assert stat.S_IMODE(named.stat().st_mode) == 0o755
    os.chmod(named, 0o2775)
    kernel_library.cache_clear()
    with pytest.raises(KernelUnavailable, match=f"make it yours alone \\(chmod go-w {named}\\)"):
        kernel_library("pool")
    assert stat.S_IMODE(named.stat().st_mode) == 0o2775


def test_mindspore_loads_kernels_only_from_the_private_folder(cache, real, tmp_path, monkeypatch):
    _fill(cache, real)
    path = kernel_library("pool")
    assert os.environ[kb.WHITE_LIST_ENV] == str(path.parent) == str(kb.load_folder())
    with pytest.raises(TypeError, match="the legal path for the file is"):
        ops.Custom(f"{real['pool']}:MaxPoolForward", lambda x: x, lambda x: x, "aot")
    # A white list the user set stays; the private folder goes inside it.
    users = tmp_path / "users-white-list"
    users.mkdir()
    monkeypatch.setenv(kb.WHITE_LIST_ENV, str(users))
    monkeypatch.setattr(kb, "_LOAD_FOLDERS", {})
    kernel_library.cache_clear()
    path = kernel_library("pool")
    assert path.parent.parent == users and os.environ[kb.WHITE_LIST_ENV] == str(users)
    kernel_library.cache_clear()


def test_training_refuses_or_falls_back_on_a_hostile_cache(tmp_path, real, planted):
    """The issue's report, replayed: a world-writable cache of another user holding look-alikes."""
    libraries, marker = planted
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    _plant(hostile, libraries, real, OTHER, "matching")
    os.chmod(hostile, 0o777)
    _chown(hostile, OTHER)
    data = make_image_folder(tmp_path / "data", train=12, val=4)
    env = {**os.environ, kb.CACHE_ENV: str(hostile)}
    command = [sys.executable, str(REPO / "train.py"), "--model", "shufflenet_v1_g3_x0_25", "--image-size",
               "32", "--batch-size", "6", "--epochs", "1", "--num-workers", "1", "--data-path", str(data)]
    refused = subprocess.run([*command, "--output-dir", str(tmp_path / "on"), "--cpu-kernels", "on"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"--cpu-kernels on: the kernel cache {hostile} belongs to uid {OTHER}" \
        in errors[0] and f"set {kb.CACHE_ENV} to a private folder" in errors[0], refused.stderr[-2000:]
    trained = subprocess.run([*command, "--output-dir", str(tmp_path / "auto"), "--no-export"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = (tmp_path / "auto" / "train.log").read_text()
    assert f"C++ CPU kernels not used (the kernel cache {hostile} belongs to uid {OTHER}" in log
    assert (tmp_path / "auto" / "final.ckpt").is_file() and not marker.exists()
