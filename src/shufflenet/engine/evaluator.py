"""Top-1, top-5 and loss over every sample of a dataset, for any model that gives logits."""
from __future__ import annotations

from typing import Callable

import numpy as np
from mindspore import Tensor


def batch_sums(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[loss sum, top-1 hits, top-5 hits, count] of one batch (cross-entropy without smoothing)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels].sum()
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = topk == labels[:, None]
    return np.array([loss, hits[:, 0].sum(), hits.any(axis=1).sum(), len(labels)], np.float64)


def evaluate(
    predict: Callable[[np.ndarray], np.ndarray],
    dataset,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """Score `predict` (images -> logits, e.g. a `Predictor`) on every batch of `dataset`, a
    shard of it when `reduce` sums across ranks."""
    totals = np.zeros(4, np.float64)
    for images, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        totals += batch_sums(predict(images), labels.astype(np.int64))
    if reduce is not None:
        totals = reduce(totals)
    count = int(totals[3])
    if count == 0:
        raise ValueError("the evaluation dataset yielded no samples")
    return {"top1": totals[1] / count, "top5": totals[2] / count, "loss": totals[0] / count,
            "samples": count}


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Sum a small float vector over every rank of the default communication group."""
    from mindspore import ops

    summed = ops.AllReduce()(Tensor(values.astype(np.float32)))
    return summed.asnumpy().astype(np.float64)
