"""Averaging checkpoints of one model, as timm's avg_checkpoints.py and torchvision's references do:
every network weight (BatchNorm statistics included) in float64, stored in its own dtype;
integer entries must agree; optimizer state and counters are dropped, the description kept, and
the files averaged recorded by name. `shufflenet average-checkpoints` picks the files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import numpy as np

from ..inference import read_weights
from ..models import ModelDescription, build_network, describe_checkpoint
from ..utils.checkpoint import load_weights, save_checkpoint
from ..utils.checkpoint_schema import FORMAT_KEY, META_KEY, checkpoint_extra


def average_checkpoints(paths: Sequence[Path]) -> tuple[ModelDescription, dict[str, np.ndarray], list[str]]:
    """The model all `paths` describe, the mean of each of its weights (float64 sum, cast back
    to the first file's dtype) and the names of the other entries, which are dropped (optimizer
    state, counters, EMA copies).

    One file is read at a time (memory: one checkpoint plus the float64 sums). Each must fit
    the network strictly, so a missing or misshapen weight names its file.
    """
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
    params = [ms.Parameter(ms.Tensor(value), name=name, requires_grad=False) for name, value in means.items()]
    extra = checkpoint_extra(description.to_json(),
                             averaged_from=[path.name for path in inputs])  # names: no local paths leak
    return save_checkpoint(params, output, extra)
