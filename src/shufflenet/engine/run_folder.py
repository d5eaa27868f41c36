"""Where a training run writes, so that no run overwrites another's files.

A folder holds one run. Training into a folder that already holds one continues it
(`--resume`), replaces it (`--overwrite`), or is refused with a line that says so; the recipe's
default folder is never refused: a second run there goes to the first free `FOLDER-2`, `-3`, ...
"""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Callable

from ..utils.files import leftover_temporaries
from .config import Config

CHECKPOINT_DIR = "checkpoints"
EPOCH_CHECKPOINT = re.compile(r"epoch-(\d+)\.ckpt$")
#: What a run leaves in its folder (rank 0 writes all of it).
RUN_FILES = ("config.yaml", "train.log", "metrics.csv", "curves.png", "eval.json", "best.ckpt",
             "final.ckpt", "model.mindir", "model.mindir.json", CHECKPOINT_DIR)


def checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.ckpt"


def epoch_checkpoints(output_dir: str | Path) -> list[Path]:
    """Epoch checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("epoch-*.ckpt")
             if (m := EPOCH_CHECKPOINT.search(p.name))]
    return [p for _, p in sorted(found)]


def run_files(folder: str | Path) -> list[str]:
    """The files of an earlier run present in `folder`."""
    return [name for name in RUN_FILES if (Path(folder) / name).exists()]


def choose_output_dir(config: Config, default_folder: bool, log: Callable[[str], None]) -> Config:
    """`config` with the folder this run writes to; refuses to mix two runs in one folder.

    `default_folder`: the folder came from the recipe, not from `--output-dir`, so a taken one
    is replaced by the first free numbered sibling instead of being refused.
    """
    out = Path(config.output_dir)
    taken = run_files(out)
    if config.resume is not None or not taken:
        return config
    if config.overwrite:
        for name in taken:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        log(f"--overwrite: removed the earlier run's {', '.join(taken)} from {out}")
        return config
    if not default_folder:
        raise ValueError(
            f"{out} already holds a run ({', '.join(taken[:4])}); continue it with --resume auto, "
            "choose another --output-dir, or pass --overwrite to replace it")
    number = 2
    while run_files(f"{out}-{number}") or Path(f"{out}-{number}").is_file():
        number += 1
    log(f"{out} holds an earlier run: this one writes to {out}-{number}")
    return dataclasses.replace(config, output_dir=f"{out}-{number}")


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
    """Temporary files of checkpoint writes that a killed run left behind."""
    stale = leftover_temporaries(output_dir) + leftover_temporaries(Path(output_dir) / CHECKPOINT_DIR)
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        names = ", ".join(p.name for p in stale[:3])
        log(f"removed {len(stale)} unfinished file(s) of a killed run: {names}")
