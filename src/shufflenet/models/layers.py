"""Building blocks shared by the families: convolution + BatchNorm, channel shuffle, grouped 1x1
convolution, the 3x3/s2 pools in both lineage conventions, the initialisations and the options
every family shares."""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Constant, HeNormal, Normal, initializer

from .registry import ModelOption

#: How a grouped convolution is computed. Both hold the same parameters (`convs.{k}.weight`).
GROUP_CONV_IMPLS = ("auto", "split", "native")


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
            depthwise: bool = False) -> list[nn.Cell]:
    """A bias-free convolution (dense, or depthwise over `in_channels`) padded `kernel_size // 2`
    on every side, as PyTorch's, and its BatchNorm."""
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                      padding=kernel_size // 2, group=in_channels if depthwise else 1, has_bias=False),
            nn.BatchNorm2d(out_channels)]


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


POOL_PADDINGS = ("same", "symmetric")
#: Options with one meaning in every family (the registry refuses a family that redefines one).
POOL_PADDING_OPTION = ModelOption(
    str, "3x3/s2 pools padded as the tutorial, zoo and mindcv (same) or as Megvii and PyTorch "
    "(symmetric)", POOL_PADDINGS)
CLASSIFIER_BIAS_OPTION = ModelOption(bool, "Dense classifier with a bias or without, as the "
                                     "weights' publisher built it")
IN_CHANNELS_OPTION = ModelOption(int, "input image channels")


class SymmetricPool(nn.Cell):
    """A 3x3/s2 pool padded 1 on every side, as PyTorch's `padding=1` (average pooling counts the
    zero padding). Its own cell so that export can swap `pool` for portable ops (see
    `shufflenet.export.portable_pools`)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.pool = (nn.MaxPool2d(3, 2, pad_mode="pad", padding=1) if kind == "max" else
                     nn.AvgPool2d(3, 2, pad_mode="pad", padding=1, count_include_pad=True))

    def construct(self, x: Tensor) -> Tensor:
        return self.pool(x)


def make_pool(kind: str, pool_padding: str) -> nn.Cell:
    """A 3x3/s2 "max" or "avg" pool. `same` pads 0 before and 1 after on even inputs (tutorial,
    zoo, mindcv); `symmetric` pads 1 on each side (Megvii, torchvision)."""
    if pool_padding not in POOL_PADDINGS:
        raise ValueError(f"pool_padding must be one of {POOL_PADDINGS}, got {pool_padding!r}")
    if pool_padding == "symmetric":
        return SymmetricPool(kind)
    return nn.MaxPool2d(3, 2, pad_mode="same") if kind == "max" else nn.AvgPool2d(3, 2, pad_mode="same")


def check_positive_ints(**values: object) -> None:
    """`ValueError` naming the first argument that is not a positive integer."""
    for arg, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def fill(param: ms.Parameter, init) -> None:
    param.set_data(initializer(init, param.shape, param.dtype))


def init_weights(net: nn.Cell, conv_init, bn_shift: float = 0.0) -> None:
    """Convolutions from `conv_init(name, cell)`; BatchNorm scale 1, shift `bn_shift`,
    statistics 0 and 1; Dense layers N(0, 0.01) with a zero bias."""
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            fill(cell.weight, conv_init(name, cell))
        elif isinstance(cell, nn.BatchNorm2d):
            fill(cell.gamma, Constant(1.0))
            fill(cell.beta, Constant(bn_shift))
            fill(cell.moving_mean, Constant(0.0))
            fill(cell.moving_variance, Constant(1.0))
        elif isinstance(cell, nn.Dense):
            fill(cell.weight, Normal(0.01))
            if cell.has_bias:
                fill(cell.bias, Constant(0.0))


def megvii_init(net: nn.Cell, small_std: tuple[str, ...] = ("first_conv",)) -> None:
    """Megvii's initialisation (every ShuffleNet release of theirs): convolutions N(0, 1/fan-in
    channels), those under `small_std` and the Dense layers N(0, 0.01); BatchNorm shift 1e-4."""
    init_weights(net, lambda name, conv: Normal(
        0.01 if any(part in name for part in small_std) else 1.0 / conv.weight.shape[1]), bn_shift=1e-4)


def fan_out_init(net: nn.Cell) -> None:
    """torchvision's and timm's initialisation of their MobileNets and Xception: convolutions
    He-normal over the fan-out, BatchNorm shift 0, Dense layers N(0, 0.01)."""
    init_weights(net, lambda name, conv: HeNormal(mode="fan_out", nonlinearity="relu"))


class PooledClassifierNet(nn.Cell):
    """The head of networks whose `features` end in global average pooling and a `classifier`
    (timm's `forward_features` / `forward_head(pre_logits)` split)."""

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = ops.mean(x, (2, 3))
        return x if pre_logits else self.classifier(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def new_classifier(in_features: int, num_classes: int, bias: bool) -> nn.Dense:
    """A classifier initialised as `megvii_init` does, e.g. for `reset_classifier`."""
    check_positive_ints(num_classes=num_classes)
    dense = nn.Dense(in_features, num_classes, has_bias=bias)
    fill(dense.weight, Normal(0.01))
    if bias:
        fill(dense.bias, Constant(0.0))
    return dense


def width_tag(width: float) -> str:
    """0.25 -> "0_25", 1.0 -> "1_0": torchvision's naming of width multipliers."""
    text = f"{width:g}"
    return (text if "." in text else text + ".0").replace(".", "_")


def percent_tag(width: float) -> str:
    """0.35 -> "035", 1.4 -> "140": mindcv's and timm's naming of MobileNet width multipliers."""
    return f"{round(width * 100):03d}"
