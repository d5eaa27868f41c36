"""Portable stand-ins for the symmetric (Megvii) pools, swapped in only while exporting.

MindSpore 2.10 lowers `MaxPool2d`/`AvgPool2d(pad_mode='pad')` to 3-D pooling primitives and
`ops.Pad` to PadV3: its ONNX converter knows none of them, a dynamic-batch MINDIR loses the
channel count after them (the per-group split then fails to compile), and Ascend 910B refuses
padded average pooling. Padding by concatenating constant borders and pooling without padding
computes the same values (bit-identical on CPU) from ops that work everywhere, so the network
itself keeps the padded pools for training and the exported graph uses these.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mindspore import Tensor, nn, ops

from ..models.layers import SymmetricPool


class BorderPaddedPool(nn.Cell):
    """`pool` (pad_mode 'valid') applied after padding every spatial side with `value`.

    `value` 0 reproduces `count_include_pad=True` average pooling; -inf reproduces max pooling.
    """

    def __init__(self, pool: nn.Cell, padding: int, value: float) -> None:
        super().__init__()
        self.pool = pool
        self.padding = padding
        self.value = value

    def construct(self, x: Tensor) -> Tensor:
        batch, channels, height, _ = x.shape
        cols = ops.fill(x.dtype, (batch, channels, height, self.padding), self.value)
        x = ops.concat((cols, x, cols), 3)
        rows = ops.fill(x.dtype, (batch, channels, self.padding, x.shape[3]), self.value)
        x = ops.concat((rows, x, rows), 2)
        return self.pool(x)


def portable_standin(kind: str) -> nn.Cell:
    """The border-padded equivalent of a `SymmetricPool` of `kind` ("max" or "avg")."""
    if kind == "max":
        return BorderPaddedPool(nn.MaxPool2d(3, 2, pad_mode="valid"), 1, float("-inf"))
    return BorderPaddedPool(nn.AvgPool2d(3, 2, pad_mode="valid"), 1, 0.0)


@contextlib.contextmanager
def portable_pools(net: nn.Cell) -> Iterator[nn.Cell]:
    """Within the block, every `SymmetricPool` of `net` (any family) computes with the stand-ins
    above; networks with 'same' pools are untouched. The original pools are put back on exit."""
    pools = [cell for _, cell in net.cells_and_names() if isinstance(cell, SymmetricPool)]
    originals = [pool.pool for pool in pools]
    try:
        for pool in pools:
            pool.pool = portable_standin(pool.kind)
        yield net
    finally:
        for pool, original in zip(pools, originals):
            pool.pool = original
