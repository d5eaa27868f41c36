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


def symmetric_pool_standins(
    kernel_size: int = 3, stride: int = 2, padding: int = 1
) -> tuple[nn.Cell, nn.Cell]:
    """(max pool, average pool) equal to the `symmetric` pools of `ShuffleNetV1`."""
    return (
        BorderPaddedPool(nn.MaxPool2d(kernel_size, stride, pad_mode="valid"), padding, float("-inf")),
        BorderPaddedPool(nn.AvgPool2d(kernel_size, stride, pad_mode="valid"), padding, 0.0),
    )


@contextlib.contextmanager
def portable_pools(net: nn.Cell) -> Iterator[nn.Cell]:
    """Within the block, a `ShuffleNetV1` with symmetric pools uses the stand-ins above.

    Networks with 'same' pools (which convert as they are) and other networks are untouched.
    The original pools are put back on exit.
    """
    if getattr(net, "pool_padding", None) != "symmetric":
        yield net
        return
    owners = [(net, "maxpool", 0)]
    owners += [(block, "branch_proj", 1) for block in net.features if block.branch_proj is not None]
    originals = [getattr(owner, attr) for owner, attr, _ in owners]
    try:
        for owner, attr, kind in owners:
            setattr(owner, attr, symmetric_pool_standins()[kind])
        yield net
    finally:
        for (owner, attr, _), original in zip(owners, originals):
            setattr(owner, attr, original)
