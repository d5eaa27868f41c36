"""A converted checkpoint against its publisher's network: the check `shufflenet convert
--check-size` runs, with both networks loaded as every command loads them."""
from __future__ import annotations

import os
from pathlib import Path

from ..data.presets import probe_batch
from ..lineages import Lineage, load_source, torch_reference
from ..utils.optional import import_torch
from .predictor import open_checkpoint


def compare_with_reference(ckpt: str | os.PathLike, src: str | os.PathLike, lineage: Lineage,
                           image_size: int, batch: int = 2) -> dict[str, float]:
    """Logits of a converted checkpoint vs the publisher's network rebuilt in PyTorch.

    Needs PyTorch. Returns the largest absolute and relative (to the largest logit) difference
    on one probe batch of preprocessed random pixels.
    """
    torch = import_torch("comparing with the publisher's PyTorch network")
    predictor = open_checkpoint(ckpt)
    reference = torch_reference(predictor.description, lineage)
    state = load_source(Path(src), lineage.origin)
    missing, unexpected = reference.load_state_dict(
        {key: torch.from_numpy(value) for key, value in state.items()}, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{src} does not fit the {lineage.origin} network: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    inputs = probe_batch(batch, image_size, predictor.preprocessing)
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(inputs)).numpy()
    diff = float(abs(predictor(inputs) - expected).max())
    return {"max_abs_diff": diff, "max_relative_diff": diff / float(abs(expected).max())}
