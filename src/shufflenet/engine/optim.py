"""Optimizer with weight decay only where it regularises: conv and dense weights."""
from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn


def split_decay_params(net: nn.Cell) -> tuple[list, list]:
    """(decayed, not decayed): multi-dimensional weights vs BatchNorm gamma/beta and biases."""
    decay, no_decay = [], []
    for param in net.trainable_params():
        (decay if len(param.shape) > 1 else no_decay).append(param)
    return decay, no_decay


def build_optimizer(
    net: nn.Cell, lrs: np.ndarray, momentum: float, weight_decay: float, loss_scale: float = 1.0
) -> nn.Optimizer:
    """SGD with momentum over a per-step learning-rate array; the step counter lives in the
    optimizer (`global_step`), so a resumed run picks up the schedule where it stopped."""
    decay, no_decay = split_decay_params(net)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return nn.Momentum(groups, learning_rate=Tensor(lrs), momentum=momentum, loss_scale=loss_scale)
