"""The checkpoint schema: every entry this project writes beside a network's parameters, named
once. Writers and readers sit in several layers (the description in `models`, the converters in
`lineages`, the trainer, averaging), so the names live here, below all of them; this module
imports nothing, so any layer may use it.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional

#: First entry of every checkpoint this project writes: such a file without its CRC was cut short.
FORMAT_KEY = "shufflenet_checkpoint"
#: The `ModelDescription` (models/description.py) as JSON: what the weights are.
META_KEY = "shufflenet_meta"
#: Epochs completed when the file was written (epoch checkpoints, best.ckpt, final.ckpt).
EPOCH_KEY = "epoch"
#: best.ckpt: the validation top-1 of the weights it holds, so a resumed run keeps the best.
TOP1_KEY = "top1"
#: best and final checkpoints: which weights they hold, the trained ones or their EMA.
WEIGHTS_KEY = "weights"
RAW_WEIGHTS, EMA_WEIGHTS = "raw", "ema"
#: average-checkpoints: the names of the files averaged (a JSON list; names only, no folders).
AVERAGED_KEY = "averaged_from"
#: Every key above: entries that describe a file rather than hold weights or training state.
SCHEMA_KEYS = (FORMAT_KEY, META_KEY, EPOCH_KEY, TOP1_KEY, WEIGHTS_KEY, AVERAGED_KEY)


def checkpoint_extra(
    description_json: str,
    epoch: Optional[int] = None,
    top1: Optional[float] = None,
    weights: Optional[str] = None,
    averaged_from: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """The entries `save_checkpoint(extra=...)` writes beside the parameters; those not given
    are left out. `FORMAT_KEY` is written by `save_checkpoint` itself."""
    if weights not in (None, RAW_WEIGHTS, EMA_WEIGHTS):
        raise ValueError(f"weights must be {RAW_WEIGHTS!r} or {EMA_WEIGHTS!r}, got {weights!r}")
    extra: dict[str, Any] = {META_KEY: description_json}
    if epoch is not None:
        extra[EPOCH_KEY] = int(epoch)
    if top1 is not None:
        extra[TOP1_KEY] = float(top1)
    if weights is not None:
        extra[WEIGHTS_KEY] = weights
    if averaged_from is not None:
        extra[AVERAGED_KEY] = json.dumps(list(averaged_from))
    return extra
