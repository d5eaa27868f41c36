"""Huawei ModelArts training jobs: copy inputs from OBS before training, outputs back after it.

As in the model zoo, `data_url`, `train_url` and `checkpoint_url` name OBS locations and the
job trains on a local cache. `moxing` exists only on ModelArts, so it is imported when a job
asks for it. One process per node copies the inputs; the node's other ranks wait for its
"done" marker, with a time-out, and a failed copy is reported to them instead of awaited.

The URLs must be OBS (`obs://`, or `s3://`, which moxing also reads): anything else, a local
path included, is refused before moxing sees it. Each job copies into a folder of its own under
`cache_dir` (`inputs-<job>`, and `outputs-<job>`), the inputs emptied first, so files an
earlier job left there never join the dataset nor its uploaded outputs; a copied checkpoint
is checked against `checkpoint_sha256` when one is given.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..utils.files import write_text
from .config import Config

DONE, FAILED = ".sync_done", ".sync_failed"
#: URL schemes moxing is given: OBS, under either of its names.
SCHEMES = ("obs://", "s3://")
#: Local name of the copied checkpoint.
CHECKPOINT = "checkpoint.ckpt"


def _moxing():
    try:
        import moxing
    except ImportError:
        raise ValueError(
            "enable_modelarts needs the moxing package, which ModelArts images provide; "
            "off ModelArts, pass --data-path and --output-dir instead"
        ) from None
    return moxing


def job_token() -> str:
    """Shared by the ranks one launcher started on this node (msrun, the rank-table script or
    ModelArts is their common parent) and by no earlier job, whose markers it thus ignores."""
    return f"{socket.gethostname()}:{os.getppid()}"


def _marked(folder: Path, marker: str, token: str) -> bool:
    path = folder / marker
    try:
        return path.read_text() == token
    except OSError:
        return False


def wait_for_marker(folder: Path, token: str, timeout: float, poll: float = 1.0) -> None:
    """Block until this job's copier marks `folder` done or failed, or until the time-out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _marked(folder, FAILED, token):
            raise ValueError(f"copying the inputs into {folder} failed on this node's first rank; "
                             "see its log")
        if _marked(folder, DONE, token):
            return
        time.sleep(poll)
    raise ValueError(f"waited {timeout:.0f} s for the inputs to be copied into {folder}; raise "
                     "--sync-timeout if the dataset is that large, or check the first rank's log")


def check_urls(config: Config) -> None:
    """Refuse, before moxing is imported, any URL that is not OBS (a local path or another
    scheme would be read or written by moxing as given) and a malformed checkpoint digest."""
    for key in ("data_url", "checkpoint_url", "train_url"):
        url = getattr(config, key)
        if url is not None and not (isinstance(url, str) and url.startswith(SCHEMES) and url.partition("://")[2]):
            raise ValueError(f"--{key.replace('_', '-')} must be an {' or '.join(SCHEMES)} URL, got "
                             f"{url!r:.120}; name the OBS location")
    digest = config.checkpoint_sha256
    if digest is not None and (config.checkpoint_url is None or not re.fullmatch("[0-9a-fA-F]{64}", digest)):
        raise ValueError(f"--checkpoint-sha256 must be 64 hex digits and comes with --checkpoint-url, got "
                         f"{digest!r:.120}")


def job_folder(cache: Path, token: str, kind: str = "inputs") -> Path:
    """This job's own `inputs` (or `outputs`) folder: named after its token, so no two jobs
    share one."""
    return cache / f"{kind}-{hashlib.sha256(token.encode()).hexdigest()[:16]}"


def sync_inputs(copy: Callable[[str, str], None], sources: dict[str, str], folder: Path,
                is_copier: bool, timeout: float, token: str, checkpoint_sha256: str | None = None) -> None:
    """Copy each `name -> url` into `folder/name` (copier) or wait for that copy (other ranks).

    The copier empties `folder` first: files left there by an earlier job would otherwise join
    the dataset (moxing's parallel copy merges into what exists).
    """
    if not is_copier:
        wait_for_marker(folder, token, timeout)
        return
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    try:
        for name, url in sources.items():
            copy(url, str(folder / name))
        if checkpoint_sha256:
            check_checkpoint(folder / CHECKPOINT, sources.get(CHECKPOINT, ""), checkpoint_sha256)
    except BaseException:
        write_text(folder / FAILED, token)
        raise
    write_text(folder / DONE, token)


def check_checkpoint(path: Path, url: str, expected: str) -> None:
    """The copied checkpoint must be the one the job names: its CRC only shows it is intact."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        raise ValueError(f"{url} (copied to {path}) has SHA-256 {digest.hexdigest()}, not the "
                         f"{expected.lower()} of --checkpoint-sha256: it is another file or was changed; "
                         "check checkpoint_url and the digest")


@contextmanager
def modelarts_session(config: Config, rank: int, local_rank: int) -> Iterator[Config]:
    """Yield `config` pointed at local copies; upload `output_dir` to `train_url` on exit.

    The upload runs on global rank 0 (the only writer of outputs) also when training fails,
    so the logs of a failed job reach OBS.
    """
    if not config.enable_modelarts:
        yield config
        return
    check_urls(config)
    mox = _moxing()
    cache = Path(config.cache_dir)
    sources = {}
    if config.data_url:
        sources["data"] = config.data_url
    if config.checkpoint_url:
        sources[CHECKPOINT] = config.checkpoint_url

    def copy(url: str, local: str) -> None:
        if local.endswith(CHECKPOINT):  # one file, whatever its URL's suffix
            mox.file.copy(url, local)
        else:
            mox.file.copy_parallel(url, local)

    token = job_token()
    inputs = job_folder(cache, token)
    sync_inputs(copy, sources, inputs, local_rank == 0, config.sync_timeout, token, config.checkpoint_sha256)
    local = dataclasses.replace(
        config,
        data_path=str(inputs / "data") if config.data_url else config.data_path,
        pretrained=str(inputs / CHECKPOINT) if config.checkpoint_url else config.pretrained,
        output_dir=str(job_folder(cache, token, "outputs")) if config.train_url else config.output_dir,
    )
    try:
        yield local
    finally:
        if config.train_url and rank == 0 and os.path.isdir(local.output_dir):
            mox.file.copy_parallel(local.output_dir, config.train_url)
