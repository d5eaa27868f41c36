"""Inference-only rewrites that make an exported network cheaper without changing its outputs.

MindSpore's CPU BatchNorm in inference runs oneDNN's plain-layout kernel (measured at 224 px,
batch 16: ~35 % of a ShuffleNetV1 forward pass). After training, every BatchNorm that follows a
convolution is an affine map per channel, so it folds into the convolution's weights plus a
per-channel bias. Use on a network built for export only: checkpoints come from the unfolded
network, whose parameter layout this does not touch.
"""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from .layers import GroupConv


class ChannelBias(nn.Cell):
    """Adds a per-channel bias: what is left of a BatchNorm once its scale is in the conv.

    `BiasAdd` is MindSpore's fast kernel; for ONNX the bias is held as (C, 1, 1) and added by
    broadcasting instead, since MindSpore's ONNX converter turns `BiasAdd` into an `Add` over the
    last axis, which onnxruntime refuses.
    """

    def __init__(self, bias: np.ndarray, bias_add: bool = True) -> None:
        super().__init__()
        self.bias_add = bias_add
        shape = (-1,) if bias_add else (-1, 1, 1)
        self.bias = Parameter(Tensor(bias.astype(np.float32).reshape(shape)), name="bias")

    def construct(self, x: Tensor) -> Tensor:
        return ops.bias_add(x, self.bias) if self.bias_add else x + self.bias


def _scale_and_shift(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """The inference BatchNorm as y = scale * x + shift, per channel."""
    gamma, beta = bn.gamma.asnumpy(), bn.beta.asnumpy()
    mean, var = bn.moving_mean.asnumpy(), bn.moving_variance.asnumpy()
    scale = gamma / np.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _scale_output_channels(conv: nn.Conv2d, scale: np.ndarray) -> None:
    weight = conv.weight.asnumpy()
    conv.weight.set_data(Tensor((weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)))


def _fold_into(conv: nn.Cell, bn: nn.BatchNorm2d, bias_add: bool) -> ChannelBias:
    scale, shift = _scale_and_shift(bn)
    if isinstance(conv, GroupConv):
        per_group = len(scale) // len(conv.convs)
        for k, group_conv in enumerate(conv.convs):
            _scale_output_channels(group_conv, scale[k * per_group:(k + 1) * per_group])
    else:
        _scale_output_channels(conv, scale)
    return ChannelBias(shift, bias_add)


def _folded(seq: nn.SequentialCell, bias_add: bool) -> nn.SequentialCell | None:
    """A copy of `seq` with each conv's BatchNorm folded into it (in nested sequences too, e.g.
    MobileNetV1's blocks), or None if there is none."""
    cells, changed = list(seq), False
    for k, cell in enumerate(cells):
        inner = _folded(cell, bias_add) if isinstance(cell, nn.SequentialCell) else None
        if inner is not None:
            cells[k], changed = inner, True
    for k in range(len(cells) - 1):
        conv, bn = cells[k], cells[k + 1]
        bias_free_conv = isinstance(conv, GroupConv) or (isinstance(conv, nn.Conv2d) and not conv.has_bias)
        if bias_free_conv and isinstance(bn, nn.BatchNorm2d):
            cells[k + 1], changed = _fold_into(conv, bn, bias_add), True
    return nn.SequentialCell(cells) if changed else None


def fold_batchnorm(net: nn.Cell, bias_add: bool = True) -> nn.Cell:
    """Fold every BatchNorm that directly follows a conv in a `SequentialCell`; returns `net`.

    Works in place (the sequences are rebuilt and re-attached: assigning into a
    `SequentialCell` does not change what it runs) and leaves the network in inference mode.
    Only bias-free convolutions followed by their BatchNorm are folded: every pair in every
    family registered here. `bias_add=False` for a graph exported to ONNX (see `ChannelBias`).
    """
    net.set_train(False)
    for _, parent in list(net.cells_and_names()):
        for name, child in list(parent.name_cells().items()):
            if isinstance(child, nn.SequentialCell) and not isinstance(parent, nn.SequentialCell):
                folded = _folded(child, bias_add)
                if folded is not None:
                    setattr(parent, name, folded)
    for path, param in net.parameters_and_names():
        param.name = path  # a re-attached cell names its parameters from its own attribute only
    net.set_train(False)
    return net
