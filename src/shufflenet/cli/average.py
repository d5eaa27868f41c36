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

import numpy as np

from ..engine.run_folder import CHECKPOINT_DIR, epoch_checkpoints
from ..models import ModelDescription
from ..utils.checkpoint_schema import FORMAT_KEY, META_KEY, checkpoint_extra
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


def average_checkpoints(paths: Sequence[Path]) -> tuple[ModelDescription, dict[str, np.ndarray], list[str]]:
    """The model all `paths` describe, the mean of each of its weights (float64 sum, cast back
    to the first file's dtype) and the names of the other entries, which are dropped (optimizer
    state, counters, EMA copies).

    One file is read at a time (memory: one checkpoint plus the float64 sums). Each must fit
    the network strictly, so a missing or misshapen weight names its file.
    """
    from ..inference import read_weights
    from ..models import build_network, describe_checkpoint
    from ..utils.checkpoint import load_weights

    first: tuple[Path, ModelDescription] | None = None
    mean = _Mean()
    dropped: set[str] = set()
    for path in paths:
        params = read_weights(path)
        description = describe_checkpoint(params, source=str(path))
        if first is None:
            first, net = (path, description), build_network(description)
            names = list(net.parameters_dict())
        elif description != first[1]:
            difference = describe_difference(first[1], description)
            raise ValueError(f"{first[0]} and {path} describe different models ({difference}); "
                             "average checkpoints of one model")
        load_weights(net, params, source=str(path))
        dropped.update(set(params) - set(names) - {FORMAT_KEY, META_KEY})
        for name in names:
            mean.add(name, params[name].asnumpy(), path)
    if first is None:
        raise ValueError("no checkpoints to average")
    return first[1], {name: mean.result(name) for name in names}, sorted(dropped)


class _Mean:
    """Float entries summed in float64 (the mean cast back to the first file's dtype); integer
    and bool entries cannot be averaged, so every file must hold the first file's value."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.fixed: dict[str, tuple[np.ndarray, Path]] = {}
        self.count: dict[str, int] = {}

    def add(self, name: str, value: np.ndarray, path: Path) -> None:
        if not np.issubdtype(value.dtype, np.floating):
            first, source = self.fixed.setdefault(name, (value.copy(), path))
            if not np.array_equal(value, first):
                raise ValueError(f"{path}: the integer entry {name} differs from {source}'s; integer entries "
                                 "cannot be averaged, so they must be identical")
            return
        if name not in self.sums:
            self.sums[name], self.dtypes[name], self.count[name] = np.zeros(value.shape), value.dtype, 0
        self.sums[name] += value.astype(np.float64)
        self.count[name] += 1

    def result(self, name: str) -> np.ndarray:
        if name in self.fixed:
            return self.fixed[name][0]
        return (self.sums[name] / self.count[name]).astype(self.dtypes[name])


def describe_difference(a: ModelDescription, b: ModelDescription) -> str:
    """What differs between two descriptions, field by field, long values shortened."""
    left, right = a.to_dict(), b.to_dict()

    def short(value) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return "; ".join(f"{key} {short(left[key])} vs {short(right[key])}"
                     for key in left if left[key] != right.get(key))


def write_average(output: Path, description: ModelDescription, means: dict[str, np.ndarray],
                  inputs: Sequence[Path]) -> Path:
    """A weights-only checkpoint in this project's format (as final.ckpt), written atomically
    and read back, with the description and the list of files averaged."""
    import mindspore as ms

    from ..utils.checkpoint import save_checkpoint

    params = [ms.Parameter(ms.Tensor(value), name=name, requires_grad=False) for name, value in means.items()]
    extra = checkpoint_extra(description.to_json(),
                             averaged_from=[path.name for path in inputs])  # names: no local paths leak
    return save_checkpoint(params, output, extra)


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
