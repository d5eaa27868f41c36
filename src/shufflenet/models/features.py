"""Every network as a backbone: the maps at its tap points instead of its logits (timm's
`features_only`).

A family declares, once, the cells its `forward_features` runs in order (`FeatureSpec.body`, a
`features.*` entry standing for every child of that sequence) and its tap points
(`FeatureSpec.taps`: cell name, channels, reduction, as timm's `feature_info` lists them). A
`FeatureExtractor` is cut from a built network: it keeps that network's cells up to the deepest
requested tap under their own names, so the parameter names are the full network's and a full
checkpoint loads into it as it is; the head (pool, dropout, classifier) and anything after the
deepest tap are not built.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from mindspore import Tensor, nn


@dataclass(frozen=True)
class FeatureTap:
    """One output of a backbone: the cell whose output it is, its channels, its reduction
    (input side / map side for inputs of a multiple of it), as timm's `feature_info` entries."""

    module: str
    num_chs: int
    reduction: int

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "num_chs": self.num_chs, "reduction": self.reduction}


@dataclass(frozen=True)
class FeatureSpec:
    """How a family runs as a backbone.

    body: the cells `forward_features` runs, in order (`"features.*"`: each child of
        `features`); a cell may repeat (Xception's shared `relu`).
    taps: the family's tap points from a model's architecture arguments (`model_arch`).
    head_options: options that only shape the head, refused with `features_only`.
    """

    body: tuple[str, ...]
    taps: Callable[[Mapping[str, Any]], tuple[FeatureTap, ...]]
    head_options: tuple[str, ...] = field(default_factory=tuple)


def taps_from_table(table: Sequence[tuple[str, int, int]], channels: Sequence[int]) -> tuple[FeatureTap, ...]:
    """Taps from a family's table of (cell, index into the model's channel tuple, reduction):
    channels are read from the architecture, never typed per model."""
    return tuple(FeatureTap(cell, int(channels[index]), reduction) for cell, index, reduction in table)


def last_at_each_reduction(strides: Sequence[int], first_reduction: int = 1) -> tuple[tuple[int, int], ...]:
    """(position, reduction) of the last of a run of layers (`strides`) at each reduction: the
    deepest map at each scale, where timm taps its MobileNets."""
    ends, reduction = [], first_reduction
    for position, stride in enumerate(strides):
        reduction *= stride
        if ends and ends[-1][1] == reduction:
            ends[-1] = (position, reduction)
        else:
            ends.append((position, reduction))
    return tuple(ends)


def stage_ends(repeats: Sequence[int]) -> tuple[int, ...]:
    """Index in `features` of each stage's last unit: (3, 11, 15) for 4-8-4."""
    return tuple(sum(repeats[:stage + 1]) - 1 for stage in range(len(repeats)))


def check_out_indices(out_indices: Sequence[int] | None, count: int) -> tuple[int, ...]:
    """The requested taps as increasing non-negative indices (None: all; negative ones count
    from the end, as timm's); a ValueError naming `out_indices` otherwise."""
    if out_indices is None:
        return tuple(range(count))
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(f"out_indices must be a non-empty sequence of integers, got {out_indices!r}")
    chosen = []
    for index in out_indices:
        if not isinstance(index, int) or isinstance(index, bool) or not -count <= index < count:
            raise ValueError(f"out_indices must hold integers in [{-count}, {count}) (this model has "
                             f"{count} tap points), got {list(out_indices)!r}")
        chosen.append(index % count)
    if any(b <= a for a, b in zip(chosen, chosen[1:])):
        raise ValueError(f"out_indices must name each tap point once, shallowest first, "
                         f"got {list(out_indices)!r}")
    return tuple(chosen)


def expand_body(net: nn.Cell, body: Sequence[str]) -> tuple[str, ...]:
    """The body's cell paths with each `name.*` replaced by `name.0`, `name.1`, ..."""
    paths: list[str] = []
    for entry in body:
        if entry.endswith(".*"):
            parent = entry[:-2]
            paths += [f"{parent}.{k}" for k in range(len(getattr(net, parent)))]
        else:
            paths.append(entry)
    return tuple(paths)


def _resolve(root: nn.Cell, path: str) -> nn.Cell:
    cell = root
    for part in path.split("."):
        cell = cell[int(part)] if part.isdigit() else getattr(cell, part)
    return cell


class FeatureExtractor(nn.Cell):
    """The cells of a network up to its deepest requested tap, returning a tuple of maps.

    Cells keep their attribute names (a cut sequence keeps its first children under their
    indices), so `get_parameters()` names are the full network's.
    """

    def __init__(self, net: nn.Cell, body: Sequence[str], taps: Sequence[FeatureTap],
                 out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        chosen = check_out_indices(out_indices, len(taps))
        self.out_indices = chosen
        self.feature_info = tuple(taps[i] for i in chosen)
        paths = expand_body(net, body)
        unplaced = [tap.module for tap in self.feature_info if paths.count(tap.module) != 1]
        if unplaced:
            raise ValueError(f"tap point(s) {unplaced} must each be in the body once: {paths}")
        last = max(paths.index(tap.module) for tap in self.feature_info)
        paths = paths[:last + 1]
        self._attach(net, paths)
        self.steps = [_resolve(self, path) for path in paths]
        wanted = {tap.module for tap in self.feature_info}
        self.returns = tuple(path in wanted for path in paths)

    def _attach(self, net: nn.Cell, paths: Sequence[str]) -> None:
        """Give this cell the network's cells that `paths` run, under the same names."""
        cut: dict[str, int] = {}
        for path in paths:
            top, _, rest = path.partition(".")
            if rest:
                if not rest.isdigit():
                    raise ValueError(f"body entry {path!r} must be a top-level cell or `sequence.index`")
                cut[top] = max(cut.get(top, -1), int(rest))
            elif top not in self._cells:
                setattr(self, top, getattr(net, top))
        for top, last in cut.items():
            setattr(self, top, nn.SequentialCell(list(getattr(net, top))[:last + 1]))

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(tap.num_chs for tap in self.feature_info)

    @property
    def reductions(self) -> tuple[int, ...]:
        return tuple(tap.reduction for tap in self.feature_info)

    def construct(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = ()
        for step, returned in zip(self.steps, self.returns):
            x = step(x)
            if returned:
                outs += (x,)
        return outs
