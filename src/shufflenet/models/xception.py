"""Xception: Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017,
https://arxiv.org/abs/1610.02357, as Keras and Cadene's `pretrainedmodels` publish it (timm's
`legacy_xception`).

Entry flow: two unpadded 3x3 convolutions (stride 2, then 1), then three blocks of separable
convolutions (3x3 depthwise + 1x1 pointwise, each followed by BatchNorm) that end in a 3x3/s2 max
pool and add a strided 1x1 projection of their input; middle flow: eight blocks of three
separable convolutions with identity shortcuts; exit flow: a block to 1024 channels, two more
separable convolutions (1536, 2048), global average pooling and the classifier. 299x299 inputs
scaled to [-1, 1] (preset `inception`).

Parameter names are Cadene's and timm's (`conv1`, `bn1`, `conv2`, `bn2`, `block{1..12}.rep.{i}`
with `skip`/`skipbn`, separable convolutions' `conv1` (depthwise) and `pointwise`, `conv3`,
`bn3`, `conv4`, `bn4`, `fc`), so their weights convert by the BatchNorm field names alone. A
block's first ReLU is not in place in Cadene's code: the shortcut adds the block's input before
that ReLU, as here. mindcv's Xception pads its block pools 'same' (`pool_padding`), which differs
from Cadene's `MaxPool2d(3, 2, 1)` on even inputs (74x74 at 299 px).
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from .features import FeatureSpec, FeatureTap, last_at_each_reduction
from .layers import (
    IN_CHANNELS_OPTION,
    POOL_PADDING_OPTION,
    check_positive_ints,
    fan_out_init,
    make_pool,
)
from .registry import register_family, register_model

FAMILY = "xception"
#: (in, out, separable convolutions, stride, starts with ReLU, widens at the first convolution)
#: of block1 ... block12, as Cadene's `Block` arguments.
BLOCKS = ((64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True), (256, 728, 2, 2, True, True),
          *((728, 728, 3, 1, True, True),) * 8, (728, 1024, 2, 2, True, False))
#: Output channels of the exit flow's two separable convolutions (`conv3`, `conv4`).
EXIT_CHANNELS = (1536, 2048)
OPTIONS = {"pool_padding": POOL_PADDING_OPTION, "in_channels": IN_CHANNELS_OPTION}
#: The cells `forward_features` runs, in order (one `relu` cell serves every activation).
BODY = ("conv1", "bn1", "relu", "conv2", "bn2", "relu", *(f"block{k}" for k in range(1, len(BLOCKS) + 1)),
        "conv3", "bn3", "relu", "conv4", "bn4", "relu")


def feature_taps(arch: dict) -> tuple[FeatureTap, ...]:
    """As a backbone, timm's `legacy_xception` scales and channels (64, 128, 256, 728, 2048 at
    r2 ... r32), each map taken before its ReLU: the stem's `bn2`, the last block at each scale
    (block1, block2, block11: what the next block's shortcut takes; timm hooks that block's first
    ReLU, `block2.rep.0`, ...) and the exit flow's `bn4`. The shared `relu` cell cannot name one
    tap; a head wanting timm's maps applies a ReLU (it has no weights)."""
    ends = last_at_each_reduction([block[3] for block in BLOCKS], first_reduction=2)[:-1]
    return (FeatureTap("bn2", BLOCKS[0][0], 2),
            *(FeatureTap(f"block{block + 1}", BLOCKS[block][1], reduction) for block, reduction in ends),
            FeatureTap("bn4", EXIT_CHANNELS[1], 32))


class SeparableConv(nn.Cell):
    """3x3 depthwise (`conv1`) then 1x1 pointwise, both without bias and without a norm between."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, pad_mode="pad", padding=1, group=in_channels,
                               has_bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, has_bias=False)

    def construct(self, x: Tensor) -> Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Cell):
    """Cadene's `Block`: (ReLU, separable conv, BN) x reps, a max pool if strided, plus a shortcut
    (a strided 1x1 conv and BN where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int, start_with_relu: bool,
                 grow_first: bool, pool_padding: str) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels if grow_first else in_channels] * (reps - 1) + [out_channels]
        rep = []
        for k in range(reps):
            rep += [nn.ReLU(), SeparableConv(widths[k], widths[k + 1]), nn.BatchNorm2d(widths[k + 1])]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(make_pool("max", pool_padding))
        self.rep = nn.SequentialCell(rep)
        self.projects = in_channels != out_channels or stride != 1
        if self.projects:
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride, has_bias=False)
            self.skipbn = nn.BatchNorm2d(out_channels)

    def construct(self, x: Tensor) -> Tensor:
        shortcut = self.skipbn(self.skip(x)) if self.projects else x
        return self.rep(x) + shortcut


class Xception(nn.Cell):
    """Xception for inputs from 32x32 up (global average pooling; 299x299 as published).

    Args:
        num_classes: classifier outputs.
        pool_padding: the blocks' 3x3/s2 max pools: "symmetric" (Cadene, timm, Keras' padding
            'same' at 299) or "same" (mindcv).
        in_channels: input image channels.
    """

    def __init__(self, num_classes: int = 1000, pool_padding: str = "symmetric",
                 in_channels: int = 3) -> None:
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        self.pool_padding = pool_padding
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 2, pad_mode="valid", has_bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, pad_mode="valid", has_bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        for index, args in enumerate(BLOCKS, 1):
            setattr(self, f"block{index}", Block(*args, pool_padding=pool_padding))
        self.blocks = [getattr(self, f"block{index}") for index in range(1, len(BLOCKS) + 1)]
        last_block, (exit1, exit2) = BLOCKS[-1][1], EXIT_CHANNELS
        self.conv3 = SeparableConv(last_block, exit1)
        self.bn3 = nn.BatchNorm2d(exit1)
        self.conv4 = SeparableConv(exit1, exit2)
        self.bn4 = nn.BatchNorm2d(exit2)
        self.relu = nn.ReLU()
        self.num_features = exit2
        self.fc = nn.Dense(exit2, num_classes)
        fan_out_init(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, e.g. to fine-tune on a new label set."""
        check_positive_ints(num_classes=num_classes)
        self.fc = nn.Dense(self.num_features, num_classes)
        fan_out_init(self.fc)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        for block in self.blocks:
            x = block(x)
        x = self.relu(self.bn3(self.conv3(x)))
        return self.relu(self.bn4(self.conv4(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = ops.mean(x, (2, 3))
        return x if pre_logits else self.fc(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def recognise_checkpoint(shapes: dict[str, tuple]) -> tuple[str, dict] | None:
    """Classes of a checkpoint with our (Cadene's, timm's) names; they describe one model."""
    if any(key not in shapes for key in ("conv1.weight", "block1.rep.0.conv1.weight", "block12.skip.weight",
                                         "conv4.pointwise.weight", "fc.weight")):
        return None
    return "xception", {"num_classes": int(shapes["fc.weight"][0])}


def arch_text(net: Xception) -> str:
    return f"entry 3 + middle 8 + exit 1 blocks, {net.pool_padding} pools, 2048 features"


register_family(FAMILY, OPTIONS, recognise_checkpoint, arch_text, head="fc",
                features=FeatureSpec(BODY, feature_taps))
register_model("xception", Xception, FAMILY, image_size=299, preprocessing="inception",
               published_mflops=(8400, "timm"))
