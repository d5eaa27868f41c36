"""Parameter and multiply-add counts measured on a built network."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn

from .layers import GroupConv


def count_params(net: nn.Cell) -> int:
    """Trainable parameters (BatchNorm running statistics excluded, as Megvii counts them)."""
    return int(sum(p.size for p in net.trainable_params()))


def count_macs(net: nn.Cell, image_size: int = 224, in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass at `image_size`, the unit of the paper's "FLOPs".

    Runs one image through `net` and counts every convolution and dense layer as weight
    elements times output positions. Pools, BatchNorm, ReLU and additions are not counted, as in
    the paper and Megvii's table. Forward hooks fire only in PyNative mode, and switching the
    process's execution mode is the caller's to do (`engine.context.pynative_mode`), so any other
    mode is refused.
    """
    if ms.get_context("mode") != ms.PYNATIVE_MODE:
        raise RuntimeError("count_macs runs the network in PyNative mode (forward hooks fire only "
                           "there); call it inside `with shufflenet.engine.context.pynative_mode():`")
    counted: list[int] = []

    def hook(cell: nn.Cell, _inputs, output) -> None:
        positions = int(np.prod(output.shape[2:])) if output.ndim == 4 else 1
        counted.append(positions * sum(p.size for p in cell.get_parameters() if p.name.endswith("weight")))

    group_convs = [name for name, cell in net.cells_and_names() if isinstance(cell, GroupConv)]
    handles = []
    for name, cell in net.cells_and_names():
        inside_group_conv = any(name.startswith(prefix + ".") for prefix in group_convs)
        if isinstance(cell, (GroupConv, nn.Dense)) or (
            isinstance(cell, nn.Conv2d) and not inside_group_conv
        ):
            handles.append(cell.register_forward_hook(hook))

    was_training = net.training
    try:
        net.set_train(False)
        net(ms.Tensor(np.zeros((1, in_channels, image_size, image_size), np.float32)))
    finally:
        net.set_train(was_training)
        for handle in handles:
            handle.remove()
    return int(sum(counted))
