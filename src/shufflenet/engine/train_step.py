"""One training step in one compiled graph: loss scaling, gradient accumulation, clipping, the
optimizer and the EMA of the weights, after mindcv's `TrainStep` (the names of its config keys).

Every piece of state lives in a `Parameter` of the step cell (`scale_sense`, `accumulated.*`,
`accumulation_step`, `ema.*`, `ema_updates`), so the epoch checkpoint, which saves the step
cell, carries it and a killed run resumes it exactly.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import functional as F

#: mindcv's dynamic loss scale: x2 after 2000 steps without overflow, /2 on overflow.
DYNAMIC_SCALE_FACTOR = 2
DYNAMIC_SCALE_WINDOW = 2000
#: mindcv's EMA warm-up: the decay is `ema_decay * (1 - exp(-updates / 2000))`.
EMA_WARMUP = 2000.0
#: Name prefixes of a run's state besides the weights: MindSpore's optimizers' buffers, ours.
STATE_PREFIXES = ("moments.", "accum.", "stat.", "moment.", "mean_square.", "adam_m.", "adam_v.",
                  "lamb_m.", "lamb_v.", "ema.", "accumulated.")

_unscale = ops.MultitypeFuncGraph("unscale")
_add_gradient = ops.MultitypeFuncGraph("add_gradient")
_ema = ops.MultitypeFuncGraph("ema")
_non_finite_count = ops.MultitypeFuncGraph("non_finite_count")
_scale_in_place = ops.MultitypeFuncGraph("scale_in_place")


@_unscale.register("Tensor", "Tensor")
def _unscale_tensor(scale: Tensor, grad: Tensor) -> Tensor:
    return grad * F.cast(1.0 / scale, F.dtype(grad))


@_non_finite_count.register("Tensor")
def _non_finite_count_tensor(grad: Tensor) -> Tensor:
    return F.cast(ops.logical_not(ops.isfinite(grad)), ms.float32).sum()


@_scale_in_place.register("Tensor", "Tensor")
def _scale_in_place_tensor(factor: Tensor, buffer: Tensor) -> Tensor:
    return F.assign(buffer, buffer * F.cast(factor, F.dtype(buffer)))


@_add_gradient.register("Tensor", "Tensor", "Tensor")
def _add_gradient_tensor(skip: Tensor, buffer: Tensor, grad: Tensor) -> Tensor:
    grad = F.cast(grad, F.dtype(buffer))
    return F.assign_add(buffer, ops.select(ops.broadcast_to(skip, grad.shape), ops.zeros_like(grad), grad))


@_ema.register("Tensor", "Tensor", "Tensor")
def _ema_tensor(decay: Tensor, average: Tensor, weight: Tensor) -> Tensor:
    return F.assign(average, average * decay + F.cast(weight, F.dtype(average)) * (1 - decay))


class WithLoss(nn.Cell):
    """Network and loss; the logits are cast to float32 first (fp16 networks under O2/O3)."""

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn

    def construct(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.loss_fn(F.cast(self.network(images), ms.float32), labels)


class TrainStep(nn.TrainOneStepWithLossScaleCell):
    """Forward, backward and (every `accumulation_steps` calls) one optimizer update.

    - Loss scale: fixed (`scale_sense` a constant, never skips) or dynamic (MindSpore's update
      cell: an overflow halves the scale and skips the micro-batch; the ranks agree on it).
    - Accumulation: micro-batch gradients are summed locally; the update uses their mean,
      reduced across ranks once per window. A skipped micro-batch counts as a zero gradient,
      and a window that saw only overflows still advances the schedule, so the optimizer's step
      counter is always `micro-batches // accumulation_steps`.
    - Clipping by the global norm of the reduced, unscaled gradients (`clip_value`).
    - EMA of every parameter (BatchNorm statistics included, as mindcv and timm), after each
      update, with mindcv's warm-up of the decay.
    """

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, loss_scale: float = 1.0,
                 dynamic: bool = False, accumulation_steps: int = 1, clip_value: float = 0.0,
                 ema_decay: float = 0.0) -> None:
        sense = (nn.DynamicLossScaleUpdateCell(loss_scale, DYNAMIC_SCALE_FACTOR, DYNAMIC_SCALE_WINDOW)
                 if dynamic else Tensor(loss_scale, ms.float32))
        super().__init__(network, optimizer, sense)
        self.dynamic = dynamic
        self.scaled = dynamic or loss_scale != 1
        self.on_cpu = ms.get_context("device_target") == "CPU"
        self.accumulation_steps = accumulation_steps
        self.clip_value = clip_value
        self.ema_decay = ema_decay
        if accumulation_steps > 1:
            self.accumulated = self.weights.clone("accumulated", init="zeros")
            self.accumulation_step = Parameter(Tensor(0, ms.int32), name="accumulation_step")
        if ema_decay > 0:
            self.averaged = ms.ParameterTuple(list(network.get_parameters()))
            self.ema = self.averaged.clone("ema", init="same")
            self.ema_updates = Parameter(Tensor(0.0, ms.float32), name="ema_updates")

    def construct(self, images: Tensor, labels: Tensor) -> Tensor:
        loss = self.network(images, labels)
        # MindSpore's float-status check only where its status is read (dynamic scaling off CPU):
        # an unread status is an isolated side-effect node, which the compiler warns it drops.
        if self.dynamic and not self.on_cpu:
            status, scale = self.start_overflow_check(loss, self.scale_sense)
        else:
            status, scale = None, self.scale_sense
        sens = ops.ones_like(loss) * F.cast(scale, F.dtype(loss))
        grads = self.grad(self.network, self.weights)(images, labels, sens)
        if self.scaled:
            grads = self.hyper_map(F.partial(_unscale, scale), grads)
        if self.dynamic and self.on_cpu:  # MindSpore's own check takes Ascend's path on CPU
            overflow = self.process_loss_scale(self._cpu_overflow(grads))
        elif self.dynamic:
            overflow = self.process_loss_scale(self.get_overflow_status(status, grads))
        else:
            overflow = False
        if self.accumulation_steps > 1:
            applied = self._accumulate(grads, overflow)
        else:
            applied = self._step(grads, overflow)
        if self.ema_decay > 0:  # outside any branch: assignments in MindSpore's branches can be lost
            applied = F.depend(applied, self._average(applied))
        return F.depend(loss, applied)

    def _cpu_overflow(self, grads: tuple) -> Tensor:
        """Any inf or NaN in any rank's gradients (MindSpore's FloatStatus has no CPU kernel)."""
        bad = ops.addn(self.hyper_map(_non_finite_count, grads))
        if self.is_distributed:
            bad = self.allreduce(bad)
        return bad > 0

    def _step(self, grads: tuple, overflow) -> Tensor:
        """One update, or none on overflow; returns 1.0 if it updated, else 0.0."""
        if not self.dynamic:
            return F.depend(Tensor(1.0, ms.float32), self._update(self.grad_reducer(grads)))
        applied = Tensor(1.0, ms.float32)
        if overflow:  # skipped, but the schedule moves on (its step counter counts batches)
            applied = F.depend(Tensor(0.0, ms.float32), F.assign_add(
                self.optimizer.global_step, self.optimizer.global_step_increase_tensor))
        else:
            applied = F.depend(applied, self._update(self.grad_reducer(grads)))
        return applied

    def _accumulate(self, grads: tuple, overflow) -> Tensor:
        """Add the micro-batch's gradients; at the window's end, update with their mean and
        clear them. Returns 1.0 if it updated, else 0.0."""
        skip = F.cast(overflow, ms.bool_) if self.dynamic else Tensor(False, ms.bool_)
        done = self.hyper_map(F.partial(_add_gradient, skip), self.accumulated, grads)
        step = F.assign_add(F.depend(self.accumulation_step, done), Tensor(1, ms.int32))
        applied = Tensor(0.0, ms.float32)
        if step % self.accumulation_steps == 0:
            mean = self.hyper_map(F.partial(_unscale, Tensor(self.accumulation_steps, ms.float32)),
                                  self.accumulated)
            applied = F.depend(Tensor(1.0, ms.float32), self._update(self.grad_reducer(mean)))
        cleared = self.hyper_map(F.partial(_scale_in_place, 1 - applied), self.accumulated)
        return F.depend(applied, cleared)

    def _update(self, grads: tuple) -> tuple:
        if self.clip_value > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_value)
        return self.optimizer(grads)

    def _average(self, applied: Tensor) -> tuple:
        """One EMA step where an update happened (the decay is 1 elsewhere)."""
        updates = F.assign_add(self.ema_updates, applied)
        decay = self.ema_decay * (1 - ops.exp(-updates / EMA_WARMUP))
        decay = applied * decay + (1 - applied)
        return self.hyper_map(F.partial(_ema, decay), self.ema, self.averaged)

    def state_parameters(self) -> list[Parameter]:
        """What besides the network's parameters a resumed run needs."""
        skip = {p.name for p in self.network.get_parameters()} | {"learning_rate", "global_step"}
        if not self.dynamic:
            skip.add("scale_sense")  # a constant: checkpoints of fixed-scale runs lack it
        return [p for p in self.get_parameters() if p.name not in skip]


def ema_parameters(step: nn.Cell) -> list[tuple[Parameter, Parameter]]:
    """(network parameter, its average) pairs; empty without EMA."""
    if not getattr(step, "ema_decay", 0):
        return []
    return list(zip(step.averaged, step.ema))


@contextmanager
def swapped(pairs: list[tuple[Parameter, Parameter]]) -> Iterator[None]:
    """The EMA in the network's parameters (and the weights in the EMA's) while inside."""
    _exchange(pairs)
    try:
        yield
    finally:
        _exchange(pairs)


def _exchange(pairs: list[tuple[Parameter, Parameter]]) -> None:
    for weight, average in pairs:
        held = weight.asnumpy().copy()
        weight.set_data(Tensor(average.asnumpy()))
        average.set_data(Tensor(held))
