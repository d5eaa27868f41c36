"""Per-step learning rate: a linear warm-up, then one of the decays users bring from mindcv,
timm, torchvision and Megvii's scripts."""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

SCHEDULERS = ("cosine", "linear", "polynomial", "step", "multistep", "constant")


def lr_schedule(
    base_lr: float, min_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
    scheduler: str = "cosine", decay_epochs: float = 30.0, decay_rate: float = 0.1,
    milestones: Sequence[int] = (),
) -> np.ndarray:
    """One learning rate per step, `epochs * steps_per_epoch` long (float32).

    Warm-up rises linearly to `base_lr`, reaching it at its last step (step i gets
    base_lr * (i + 1) / warmup_steps). The decay then runs over the remaining steps, at
    progress p from 0 (its first step) towards 1 (one step after the end), and epoch e counted
    from its start (as mindcv's and torchvision's schedulers chained after a warm-up):

    - cosine: min_lr + (base_lr - min_lr) (1 + cos(pi p)) / 2 (mindcv's cosine_decay, timm's);
    - linear: base_lr - (base_lr - min_lr) p (Megvii's ShuffleNet recipe, with min_lr 0);
    - polynomial: min_lr + (base_lr - min_lr) (1 - p)^decay_rate (mindcv's polynomial_decay);
    - step: base_lr * decay_rate^floor(e / decay_epochs) (mindcv's step_decay);
    - multistep: base_lr * decay_rate^(milestones passed by floor(e)) (mindcv's multi_step_decay);
    - constant: base_lr.

    Unlike the tutorial, every step gets its own value (the tutorial trains at the schedule's
    last value).
    """
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    ramp = base_lr * (np.arange(min(warmup, total)) + 1) / max(warmup, 1)
    rest = np.arange(total - len(ramp), dtype=np.float64)
    progress = rest / max(1, total - warmup)
    epoch = np.floor(rest / steps_per_epoch)
    span = base_lr - min_lr
    if scheduler == "cosine":
        decay = min_lr + 0.5 * span * (1 + np.cos(math.pi * progress))
    elif scheduler == "linear":
        decay = base_lr - span * progress
    elif scheduler == "polynomial":
        decay = min_lr + span * (1 - progress) ** decay_rate
    elif scheduler == "step":
        decay = base_lr * decay_rate ** np.floor(epoch / decay_epochs)
    elif scheduler == "multistep":
        passed = [bisect.bisect_right(sorted(milestones), e) for e in epoch]
        decay = base_lr * decay_rate ** np.array(passed, np.float64)
    elif scheduler == "constant":
        decay = np.full(len(rest), base_lr)
    else:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    return np.concatenate([ramp, decay]).astype(np.float32)
