"""Huawei ModelArts training jobs: copy inputs from OBS before training, outputs back after it.

As in the model zoo, `data_url`, `train_url` and `checkpoint_url` name OBS locations and the
job trains on a local cache. `moxing` exists only on ModelArts, so it is imported when a job
asks for it. One process per node copies the inputs; the node's other ranks wait for its
"done" marker, with a time-out, and a failed copy is reported to them instead of awaited.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .config import Config

DONE, FAILED = ".sync_done", ".sync_failed"


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


def sync_inputs(copy: Callable[[str, str], None], sources: dict[str, str], cache: Path,
                is_copier: bool, timeout: float, token: str) -> None:
    """Copy each `name -> url` into `cache/name` (copier) or wait for that copy (other ranks)."""
    cache.mkdir(parents=True, exist_ok=True)
    if not is_copier:
        wait_for_marker(cache, token, timeout)
        return
    try:
        for name, url in sources.items():
            copy(url, str(cache / name))
    except BaseException:
        (cache / FAILED).write_text(token)
        raise
    (cache / DONE).write_text(token)


@contextmanager
def modelarts_session(config: Config, rank: int, local_rank: int) -> Iterator[Config]:
    """Yield `config` pointed at local copies; upload `output_dir` to `train_url` on exit.

    The upload runs on global rank 0 (the only writer of outputs) also when training fails,
    so the logs of a failed job reach OBS.
    """
    if not config.enable_modelarts:
        yield config
        return
    mox = _moxing()
    cache = Path(config.cache_dir)
    sources = {}
    if config.data_url:
        sources["data"] = config.data_url
    if config.checkpoint_url:
        sources["checkpoint.ckpt"] = config.checkpoint_url

    def copy(url: str, local: str) -> None:
        if url.endswith(".ckpt"):
            mox.file.copy(url, local)
        else:
            mox.file.copy_parallel(url, local)

    sync_inputs(copy, sources, cache / "inputs", local_rank == 0, config.sync_timeout, job_token())
    local = dataclasses.replace(
        config,
        data_path=str(cache / "inputs" / "data") if config.data_url else config.data_path,
        pretrained=(str(cache / "inputs" / "checkpoint.ckpt") if config.checkpoint_url
                    else config.pretrained),
        output_dir=str(cache / "outputs") if config.train_url else config.output_dir,
    )
    try:
        yield local
    finally:
        if config.train_url and rank == 0 and os.path.isdir(local.output_dir):
            mox.file.copy_parallel(local.output_dir, config.train_url)
