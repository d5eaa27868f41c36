"""Per-step learning rate: linear warm-up, then cosine to a floor."""
from __future__ import annotations

import math

import numpy as np


def warmup_cosine_lr(
    base_lr: float, min_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0
) -> np.ndarray:
    """One learning rate per step, `epochs * steps_per_epoch` long (float32).

    Warm-up rises linearly to `base_lr`, reaching it at its last step (step i gets
    base_lr * (i + 1) / warmup_steps); then a half cosine falls from `base_lr` at the first step
    after warm-up towards `min_lr`, which it would reach one step after the end. Unlike the
    tutorial, every step gets its own value (the tutorial trains at the schedule's last value).
    """
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    lrs = np.empty(total, np.float64)
    for step in range(total):
        if step < warmup:
            lrs[step] = base_lr * (step + 1) / warmup
        else:
            progress = (step - warmup) / max(1, total - warmup)
            lrs[step] = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))
    return lrs.astype(np.float32)
