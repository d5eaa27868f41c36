"""Average the weights of several checkpoints of one model into a weights-only checkpoint.

  shufflenet average-checkpoints a.ckpt b.ckpt c.ckpt --output avg.ckpt
  shufflenet average-checkpoints --input-dir outputs/run --last 5 --output avg.ckpt

As timm's avg_checkpoints.py and torchvision's references do: every network weight, BatchNorm
moving statistics included, is averaged in float64 and stored in its own dtype; integer entries
must be identical. Optimizer state (momentum buffers, step counter, learning rates, EMA or
accumulation copies) and the epoch are dropped, the model description is kept, and the files
averaged are recorded by name (no folders, which would disclose the machine's paths) under
"averaged_from" (`AVERAGED_KEY`): the output loads in `shufflenet eval`, `export`, `predict` and
`train --pretrained` as final.ckpt does. All inputs must describe the same model.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..engine.averaging import average_checkpoints, write_average
from ..engine.run_folder import CHECKPOINT_DIR, epoch_checkpoints
from .common import run_command

PROG = "shufflenet average-checkpoints"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", metavar="CKPT", help="checkpoints to average")
    parser.add_argument("--input-dir", metavar="DIR",
                        help=f"a training run's folder: average its epoch checkpoints "
                        f"({CHECKPOINT_DIR}/epoch-NNNN.ckpt), all of them or the newest --last N")
    parser.add_argument("--last", type=int, metavar="N",
                        help="with --input-dir: only the newest N epoch checkpoints")
    parser.add_argument("--output", required=True, metavar="OUT.ckpt",
                        help="the averaged checkpoint to write (.ckpt)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return parser


def select_inputs(files: Sequence[str], input_dir: str | None, last: int | None) -> list[Path]:
    """The files named, then the newest `last` (or all) epoch checkpoints of `input_dir`;
    a file named twice would weigh double, so it is refused."""
    paths = [Path(f) for f in files]
    if input_dir is not None:
        run = Path(input_dir)
        run = run.parent if run.name == CHECKPOINT_DIR else run  # the checkpoints folder itself
        found = epoch_checkpoints(run)
        if not found:
            raise ValueError(f"--input-dir {input_dir}: no epoch checkpoints (epoch-NNNN.ckpt) in "
                             f"{run / CHECKPOINT_DIR}; name the checkpoints instead")
        if last is not None and last > len(found):
            raise ValueError(f"--last {last}: {run / CHECKPOINT_DIR} holds only {len(found)} epoch "
                             f"checkpoint(s) ({found[0].name} to {found[-1].name}); ask for fewer")
        paths += found[-last:] if last is not None else found
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise ValueError(f"{path} is given twice (also as {seen[path.resolve()]}): it would count double")
        seen[path.resolve()] = path
    return paths


def check_output(output: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse, before reading anything, an output that would replace an input or, without
    --overwrite, any existing file."""
    if output.suffix != ".ckpt":
        raise ValueError(f"--output {output} must end in .ckpt")
    if output.resolve() in {path.resolve() for path in inputs}:
        raise ValueError(f"--output {output} is one of the checkpoints to average; choose another name")
    if output.exists() and not overwrite:
        raise ValueError(f"--output {output} already exists; pass --overwrite to replace it")


def run(args: argparse.Namespace) -> None:
    inputs = select_inputs(args.checkpoints, args.input_dir, args.last)
    output = Path(args.output)
    check_output(output, inputs, args.overwrite)
    description, means, dropped = average_checkpoints(inputs)
    write_average(output, description, means, inputs)
    names = ", ".join(path.name for path in inputs)
    print(f"wrote {output}: the mean of {len(inputs)} checkpoint(s) of {description.model} ({names}); "
          f"{len(means)} network weights kept, {len(dropped)} other entries dropped (optimizer state, "
          "counters)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.last is not None and args.input_dir is None:
        parser.error("--last needs --input-dir (the training run whose newest checkpoints to average)")
    if args.last is not None and args.last < 1:
        parser.error(f"--last must be at least 1, got {args.last}")
    if not args.checkpoints and args.input_dir is None:
        parser.error("name the checkpoints to average, or a training run with --input-dir")
    return run_command(PROG, lambda: run(args))
