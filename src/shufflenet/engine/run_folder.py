"""Where a training run writes, so that no run overwrites another's files.

A folder holds one run. Training into a folder that already holds one continues it
(`--resume`), replaces it (`--overwrite`), or is refused with a line that says so; the recipe's
default folder is never refused: a second run there goes to the first free `FOLDER-2`, `-3`, ...
A run holds its folder's lock for its whole life (`RunFolder`), so runs started at the same
moment take different folders and a live run's folder is refused even before it holds files.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from ..inference.sidecar import sidecar_path
from ..utils.files import recover_leftovers
from .config import Config

#: The run folder's table: every name a run writes there (rank 0 writes all of it). The trainer
#: writes by these names, `--overwrite` removes them and a folder holding any is a taken one.
CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
EVAL_FILE = "eval.json"
BEST_CHECKPOINT = "best.ckpt"
FINAL_CHECKPOINT = "final.ckpt"
#: The EMA's final weights (only with --ema).
FINAL_EMA_CHECKPOINT = "final_ema.ckpt"
#: The verified MINDIR of the better final weights (unless --no-export), and its sidecar.
EXPORT_FILE = "model.mindir"
EXPORT_SIDECAR = sidecar_path(EXPORT_FILE).name
#: Epoch checkpoints (`checkpoint_path`), the oldest beyond --keep-checkpoints removed.
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = (CONFIG_FILE, LOG_FILE, METRICS_FILE, CURVES_FILE, EVAL_FILE, BEST_CHECKPOINT,
             FINAL_CHECKPOINT, FINAL_EMA_CHECKPOINT, EXPORT_FILE, EXPORT_SIDECAR, CHECKPOINT_DIR)
#: The lock a run holds on its folder while it runs (removed when it ends; not a run file).
LOCK_FILE = ".run.lock"
EPOCH_CHECKPOINT = re.compile(r"epoch-(\d+)\.ckpt$")


def checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.ckpt"


def epoch_checkpoints(output_dir: str | Path) -> list[Path]:
    """Epoch checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("epoch-*.ckpt")
             if (m := EPOCH_CHECKPOINT.search(p.name))]
    return [p for _, p in sorted(found)]


def run_files(folder: str | Path) -> list[str]:
    """The files of an earlier run present in `folder` (a link counts, wherever it points)."""
    return [name for name in RUN_FILES if os.path.lexists(Path(folder) / name)]


class RunFolder:
    """The folder one run writes to, claimed by an exclusive lock (`LOCK_FILE`, filelock) that
    is held for the run's life: two runs started together never share a folder, and no run
    touches the temporary files of a live one. Rank 0 only: the other ranks write nothing.

    `start` (the run's checks have passed) clears a killed run's leftovers and, with
    --overwrite, the earlier run's files; `abandon` (the run was refused before it started)
    removes what the claim created; leaving the `with` block releases the folder.
    """

    def __init__(self, config: Config, lock: FileLock, created: list[Path]) -> None:
        self.config = config
        self.lock = lock
        self.created = created  # folders the claim made, outermost first

    @property
    def path(self) -> Path:
        return Path(self.config.output_dir)

    def start(self, log: Callable[[str], None]) -> None:
        """The run's checks passed: clear what killed writers left, then (--overwrite) the
        earlier run's files; only now, so a refused run has changed nothing."""
        remove_leftovers(self.path, log)
        taken = run_files(self.path)
        if self.config.overwrite and self.config.resume is None and taken:
            for name in taken:
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            log(f"--overwrite: removed the earlier run's {', '.join(taken)} from {self.path}")

    def release(self) -> None:
        """Give the folder up; its lock file goes too (filelock refuses a lock on a removed one)."""
        if self.lock.is_locked:
            if self.lock.lock_counter == 1:
                Path(self.lock.lock_file).unlink(missing_ok=True)
            self.lock.release()

    def abandon(self) -> None:
        """Release the folder and remove the folders the claim created (left if not empty)."""
        self.release()
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def claim_output_dir(config: Config, default_folder: bool, log: Callable[[str], None]) -> RunFolder:
    """Claim the folder this run writes to; refuses to mix two runs in one folder.

    `default_folder`: the folder came from the recipe, not from `--output-dir`, so a taken one
    (an earlier run's files, or a live run's lock) is replaced by the first free numbered
    sibling instead of being refused. `--resume` continues the folder's run, unless a live run
    holds it.
    """
    out = Path(config.output_dir)
    if config.resume == "auto" and not out.is_dir():
        raise ValueError(f"--resume auto: {out} does not exist; pass the --output-dir of the run to "
                         "continue, or drop --resume to start a new run")
    candidate, number, reason = out, 1, ""
    while True:
        if number == 1 or candidate.is_dir() or not candidate.exists():
            claim = _try_claim(dataclasses.replace(config, output_dir=str(candidate)))
            taken = run_files(candidate) if claim else []
            if claim and (config.resume is not None or config.overwrite or not taken):
                if reason:
                    log(f"{out} {reason}: this one writes to {candidate}")
                return claim
            if claim:
                claim.abandon()
            if not default_folder or config.resume is not None:
                raise ValueError(_refusal(candidate, taken))
            reason = reason or ("holds an earlier run" if claim else "is in use by a run still going")
        number += 1
        candidate = Path(f"{out}-{number}")


def _refusal(folder: Path, taken: list[str]) -> str:
    if not taken:
        return (f"{folder} is in use by a run that is still going (it holds {folder / LOCK_FILE}); "
                "wait for it to end, or choose another --output-dir")
    return (f"{folder} already holds a run ({', '.join(taken[:4])}); continue it with --resume auto, "
            "choose another --output-dir, or pass --overwrite to replace it")


def _try_claim(config: Config) -> RunFolder | None:
    """The folder, created as needed and locked; None while a live run holds it."""
    folder = Path(config.output_dir)
    created = make_dirs(folder)
    lock = FileLock(folder / LOCK_FILE, is_singleton=True)  # a process holds a folder once
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    claim = RunFolder(config, lock, created)
    log_file = folder / LOG_FILE
    if log_file.is_symlink():
        claim.abandon()
        raise ValueError(f"{log_file} is a symbolic link: a run never writes its log through a link; "
                         "remove it or choose another --output-dir")
    return claim


def make_dirs(folder: Path) -> list[Path]:
    """`folder` and its missing parents; returns those this call created, outermost first."""
    missing = [folder, *folder.parents]
    missing = list(reversed(missing[:next(i for i, p in enumerate(missing) if p.exists())]))
    created = []
    for path in missing:
        try:
            path.mkdir()
        except FileExistsError:  # another run made it meanwhile: it is not ours to remove
            continue
        created.append(path)
    return created


def resolve_resume(config: Config, log: Callable[[str], None]) -> Path | None:
    """The checkpoint `--resume` names; `auto`: the newest epoch checkpoint of output_dir."""
    if config.resume is None:
        return None
    if config.resume != "auto":
        return Path(config.resume)
    out = Path(config.output_dir)
    if not out.is_dir():
        raise ValueError(f"--resume auto: {out} does not exist; pass the --output-dir of the run to "
                         "continue, or drop --resume to start a new run")
    found = epoch_checkpoints(out)
    if not found:
        log(f"--resume auto: no checkpoint in {out / CHECKPOINT_DIR}; starting from scratch")
    return found[-1] if found else None


def remove_leftovers(output_dir: str | Path, log: Callable[[str], None]) -> None:
    """What writes of a killed run (or export) left: committed exports are finished, the rest
    removed. Only leftovers whose writer is gone are touched."""
    finished, removed = [], []
    for folder in (Path(output_dir), Path(output_dir) / CHECKPOINT_DIR):
        done, gone = recover_leftovers(folder)
        finished, removed = finished + done, removed + gone
    if finished:
        log(f"finished the interrupted replacement of {', '.join(p.name for p in finished)}")
    if removed:
        names = ", ".join(p.name for p in removed[:3])
        log(f"removed {len(removed)} unfinished file(s) of a killed run: {names}")
