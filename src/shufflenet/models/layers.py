"""Building blocks shared by the ShuffleNetV1 family: channel shuffle and grouped 1x1 convolution."""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

#: How a grouped convolution is computed. Both hold the same parameters (`convs.{k}.weight`).
GROUP_CONV_IMPLS = ("auto", "split", "native")


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of `groups` groups so the next grouped conv sees every group.

    Uses the ordering of the MindSpore tutorial, the model zoo, mindcv and Megvii's release:
    reshape to (b, c/g, g, h, w) and swap axes 1 and 2, so for c=12, g=3 the output is
    `x[:, [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]]`. The paper's reshape to (b, g, c/g) is the
    inverse permutation; accuracy is the same, but trained weights are tied to one ordering.
    """
    _, channels, height, width = x.shape
    x = ops.reshape(x, (-1, channels // groups, groups, height, width))
    x = ops.transpose(x, (0, 2, 1, 3, 4))
    return ops.reshape(x, (-1, channels, height, width))


def resolve_group_conv_impl(impl: str) -> str:
    """Pick the grouped-conv implementation: `split` on Ascend, `native` elsewhere for `auto`.

    Ascend's `nn.Conv2d` supports `group > 1` only for depthwise convolutions, so the per-group
    split of the MindSpore tutorial is the only form that runs there.
    """
    if impl not in GROUP_CONV_IMPLS:
        raise ValueError(f"group_conv must be one of {GROUP_CONV_IMPLS}, got {impl!r}")
    if impl == "auto":
        return "split" if ms.get_context("device_target") == "Ascend" else "native"
    return impl


class GroupConv(nn.Cell):
    """Grouped convolution held as one `nn.Conv2d` per group, as in the MindSpore tutorial.

    `impl="split"` splits the input, runs each group's conv and concatenates (the only form
    Ascend accepts); `impl="native"` concatenates the per-group weights and runs one grouped
    convolution. The parameters are the same in both, so checkpoints move freely between them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"GroupConv: in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must both be divisible by groups ({groups})"
            )
        self.groups = groups
        self.impl = resolve_group_conv_impl(impl)
        self.stride = stride
        self.padding = padding
        self.convs = nn.CellList(
            [
                nn.Conv2d(
                    in_channels // groups,
                    out_channels // groups,
                    kernel_size,
                    stride=stride,
                    pad_mode="pad",
                    padding=padding,
                    has_bias=False,
                )
                for _ in range(groups)
            ]
        )

    def construct(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            return self.convs[0](x)
        if self.impl == "native":
            weights = ()
            for conv in self.convs:
                weights = weights + (conv.weight,)
            weight = ops.concat(weights, 0)
            return ops.conv2d(
                x, weight, stride=self.stride, pad_mode="pad", padding=self.padding, groups=self.groups
            )
        inputs = ops.split(x, x.shape[1] // self.groups, 1)
        outputs = ()
        for k in range(self.groups):
            outputs = outputs + (self.convs[k](inputs[k]),)
        return ops.concat(outputs, 1)
