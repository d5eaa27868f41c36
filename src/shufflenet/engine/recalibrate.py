"""Re-estimate BatchNorm statistics after training, as Megvii's ShuffleNet recipe does.

The moving statistics a network ends training with are an exponential average over the last
few hundred steps of weights that kept changing; Megvii resets them and feeds training batches
through the final weights with PyTorch's `momentum=None` (a plain average over the batches).
`recalibrate_batchnorm` does the same in MindSpore, exactly, in graph mode.

MindSpore bakes a BatchNorm's momentum into its compiled `ops.BatchNorm` primitive
(`nn.BatchNorm2d.bn_train`), and a graph compiled once keeps the momentum it was compiled with
even if the attribute changes later. So each BatchNorm gets, for the duration of the call, a
training primitive with momentum 0 in `nn` terms (the op's momentum 1.0: the moving statistics
become the batch's own), the network runs through a fresh wrapper cell (a fresh compilation
that sees those primitives), the statistics are read after every batch and averaged in float64,
and the original primitives, train/eval modes and cached graphs are left as they were.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn, ops

#: The BatchNorm cells whose statistics are re-estimated (BatchNorm3d wraps a BatchNorm2d).
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


class _Forward(nn.Cell):
    """A new top-level cell around `net`: calling it compiles a new graph, so the swapped
    primitives are used (calling `net` itself would reuse its cached graph). `auto_prefix=False`
    keeps the network's parameter names as they are."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x):
        return self.net(x)


def batchnorm_layers(net: nn.Cell) -> list[tuple[str, nn.Cell]]:
    """Every BatchNorm of `net` (nested ones too) as (name, cell); refuses the kinds whose
    statistics a single-device train-mode forward pass cannot re-estimate."""
    cells = list(net.cells_and_names())
    synced = [name or "the network" for name, cell in cells if isinstance(cell, nn.SyncBatchNorm)]
    if synced:
        raise ValueError(f"{synced[0]} is a SyncBatchNorm: recalibrate a single-device copy of the network "
                         "(built with nn.BatchNorm2d) instead")
    layers = [(name, cell) for name, cell in cells if isinstance(cell, BATCHNORM_TYPES)]
    frozen = [name for name, cell in layers if cell.use_batch_statistics is False]
    if frozen:
        raise ValueError(f"BatchNorm {frozen[0]} has use_batch_statistics=False: it never updates its "
                         "statistics, so they cannot be re-estimated")
    if not layers:
        raise ValueError(f"{type(net).__name__} has no BatchNorm layers (nn.BatchNorm1d/2d): there are no "
                         "statistics to re-estimate (a network with BatchNorm folded into its convolutions "
                         "must be recalibrated before folding)")
    return layers


def recalibrate_batchnorm(net: nn.Cell, batches: Iterable[Any], max_batches: int) -> int:
    """Replace every BatchNorm's moving statistics by their average over up to `max_batches`
    batches of `batches` (image Tensors or arrays, or tuples whose first element is the images),
    run in train mode; returns how many batches were used. Nothing else in `net` changes.

    Result per channel: moving_mean = mean over batches of each batch's mean; moving_variance =
    mean over batches of each batch's *unbiased* variance (divisor n - 1, n = batch x height x
    width), the convention in which MindSpore's CPU BatchNorm updates its moving variance
    (measured on 2.10); this is PyTorch's `momentum=None` cumulative average. Every BatchNorm
    sees the batch normalised with batch statistics by the layers before it, as in training.
    At most `max_batches` items are taken from `batches`. On any error the network keeps its
    previous statistics.
    """
    if not isinstance(max_batches, int) or max_batches < 1:
        raise ValueError(f"max_batches must be a positive integer, got {max_batches!r}")
    layers = batchnorm_layers(net)
    before = _read_statistics(layers)
    modes = [(cell, cell.training) for _, cell in net.cells_and_names()]
    originals = [cell.bn_train for _, cell in layers]
    sums = [(np.zeros(cell.num_features), np.zeros(cell.num_features)) for _, cell in layers]
    used = 0
    try:
        for _, cell in layers:  # the op's momentum 1.0 = nn momentum 0: keep the batch's statistics
            cell.bn_train = ops.BatchNorm(is_training=True, epsilon=cell.eps, momentum=1.0,
                                          data_format=cell.format)
        _write_statistics(layers, [(np.zeros(c.num_features), np.ones(c.num_features)) for _, c in layers])
        runner = _Forward(net).set_train(True)
        for item in itertools.islice(iter(batches), max_batches):
            runner(_images(item))
            for (mean_sum, var_sum), (mean, var) in zip(sums, _read_statistics(layers)):
                mean_sum += mean
                var_sum += var
            used += 1
        if used == 0:
            raise ValueError("recalibrate_batchnorm: the batches yielded nothing; pass an iterator over "
                             "at least one batch of training images")
    except BaseException:
        _write_statistics(layers, before)
        raise
    finally:
        for (_, cell), primitive in zip(layers, originals):
            cell.bn_train = primitive
        for cell, training in modes:  # parents come before their children: each ends as it was
            cell.set_train(training)
    _write_statistics(layers, [(mean_sum / used, var_sum / used) for mean_sum, var_sum in sums])
    return used


def _images(item: Any) -> ms.Tensor:
    """The image batch of one item: a Tensor or array, or the first element of a tuple/list."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("recalibrate_batchnorm: got an empty tuple instead of a batch")
        item = item[0]
    if isinstance(item, np.ndarray):
        item = ms.Tensor(item)
    if not isinstance(item, ms.Tensor):
        raise TypeError(f"recalibrate_batchnorm: expected a batch of images (Tensor or numpy array), "
                         f"got {type(item).__name__}")
    return item


def _read_statistics(layers: list[tuple[str, nn.Cell]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each BatchNorm's (moving_mean, moving_variance) in float64."""
    return [(cell.moving_mean.asnumpy().astype(np.float64), cell.moving_variance.asnumpy().astype(np.float64))
            for _, cell in layers]


def _write_statistics(layers: list[tuple[str, nn.Cell]], stats: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Set each BatchNorm's moving statistics, rounded once to the parameters' own dtype."""
    for (_, cell), (mean, var) in zip(layers, stats):
        for param, value in ((cell.moving_mean, mean), (cell.moving_variance, var)):
            param.set_data(ms.Tensor(np.asarray(value).astype(param.asnumpy().dtype)))
