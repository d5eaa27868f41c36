"""Optimizers over a per-step learning-rate array, with weight decay only where it
regularises: conv and dense weights, never BatchNorm or biases."""
from __future__ import annotations

from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import functional as F

#: `opt` values; mindcv's names (its `sgd` is SGD with momentum and no dampening).
OPTIMIZERS = ("momentum", "nesterov", "sgd", "adamw", "rmsprop", "lamb")

_adamw = ops.MultitypeFuncGraph("adamw")


def split_decay_params(net: nn.Cell) -> tuple[list, list]:
    """(decayed, not decayed): multi-dimensional weights vs BatchNorm gamma/beta and biases."""
    decay, no_decay = [], []
    for param in net.trainable_params():
        (decay if len(param.shape) > 1 else no_decay).append(param)
    return decay, no_decay


def build_optimizer(net: nn.Cell, lrs: np.ndarray, momentum: float, weight_decay: float,
                    opt: str = "momentum", eps: Optional[float] = None) -> nn.Optimizer:
    """`opt` over the per-step `lrs` (a 0-d array: one constant rate); the step counter lives
    in the optimizer (`global_step`), so a resumed run picks up the schedule where it stopped.
    Gradients arrive unscaled (the train step divides the loss scale out). `eps` None: the
    optimizer's usual value (mindcv's 1e-10 for RMSProp, 1e-8 for AdamW as torch, 1e-6 for
    LAMB)."""
    decay, no_decay = split_decay_params(net)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = Tensor(lrs)
    if opt == "momentum":
        return nn.Momentum(groups, lr, momentum)
    if opt == "nesterov":  # MindSpore 2.10's CPU ApplyMomentum ignores use_nesterov; SGD's does not
        return nn.SGD(groups, lr, momentum=momentum, nesterov=True)
    if opt == "sgd":
        return nn.SGD(groups, lr, momentum=momentum)
    if opt == "adamw":
        return AdamW(groups, lr, eps=1e-8 if eps is None else eps)
    if opt == "rmsprop":
        return nn.RMSProp(groups, lr, momentum=momentum, epsilon=1e-10 if eps is None else eps)
    if opt == "lamb":
        return AdamW(groups, lr, eps=1e-6 if eps is None else eps, trust_ratio=True)
    raise ValueError(f"opt must be one of {', '.join(OPTIMIZERS)}, got {opt!r}")


@_adamw.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                 "Tensor", "Tensor", "Tensor")
def _adamw_update(trust, beta1, beta2, eps, corrections, lr, decay, weight, m, v, grad):
    """torch's AdamW on one tensor (decoupled decay, bias-corrected step) or, with `trust`, LAMB
    (the decay inside the step, the step scaled by ||weight|| / ||step||)."""
    grad = F.cast(grad, F.dtype(m))
    next_m = F.assign(m, beta1 * m + (1 - beta1) * grad)
    next_v = F.assign(v, beta2 * v + (1 - beta2) * grad * grad)
    step = next_m / corrections[0] / (ops.sqrt(next_v / corrections[1]) + eps)
    if trust:
        step = step + decay * weight
        weight_norm, step_norm = ops.norm(weight), ops.norm(step)
        ratio = ops.select(ops.logical_and(weight_norm > 0, step_norm > 0), weight_norm / step_norm,
                           ops.ones_like(weight_norm))
        return F.assign(weight, weight - lr * ratio * step)
    return F.assign(weight, weight * (1 - lr * decay) - lr * step)


class AdamW(nn.Optimizer):
    """torch.optim.AdamW (and mindcv's AdamW), or LAMB with `trust_ratio`: MindSpore's
    `AdamWeightDecay` has no bias correction, which changes the first thousands of steps, and
    its `Lamb` has no CPU kernel."""

    def __init__(self, params, learning_rate: Tensor, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, trust_ratio: bool = False) -> None:
        super().__init__(learning_rate, params)
        self.beta1 = Tensor(beta1, ms.float32)
        self.beta2 = Tensor(beta2, ms.float32)
        self.eps = Tensor(eps, ms.float32)
        self.trust = Tensor(trust_ratio, ms.bool_)
        prefix = "lamb" if trust_ratio else "adam"
        self.moments1 = self._parameters.clone(prefix=f"{prefix}_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix=f"{prefix}_v", init="zeros")
        self.beta1_power = Parameter(Tensor(1.0, ms.float32), name="beta1_power")
        self.beta2_power = Parameter(Tensor(1.0, ms.float32), name="beta2_power")

    def construct(self, gradients):
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        beta1_power = F.assign(self.beta1_power, self.beta1_power * self.beta1)
        beta2_power = F.assign(self.beta2_power, self.beta2_power * self.beta2)
        corrections = ops.stack([1 - beta1_power, 1 - beta2_power])
        step = F.partial(_adamw, self.trust, self.beta1, self.beta2, self.eps, corrections, lr)
        return self.hyper_map(step, self.get_weight_decay(), self._parameters, self.moments1, self.moments2,
                              gradients)
