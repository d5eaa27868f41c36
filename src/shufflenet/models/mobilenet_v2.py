"""MobileNetV2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR
2018, https://arxiv.org/abs/1801.04381.

A 3x3/s2 convolution, seventeen inverted residuals (1x1 expansion, 3x3 depthwise, 1x1 linear
projection; a shortcut where stride and channels allow), a 1x1 convolution to 1280 channels,
global average pooling, Dropout 0.2 and a Dense classifier; ReLU6 throughout. The width
multiplier rounds every layer to a multiple of 8 (`make_divisible`, as torchvision, mindcv and
TF-slim) and widens the last convolution only above 1.

Parameter names are mindcv's (`features.0/1` the stem, `features.{3..19}.layers.{k}` the
blocks, `features.20/21` the last convolution, `classifier.1`), so its checkpoints load as they
are; torchvision's (`features.{i}.conv.*`) convert (`shufflenet.lineages`).
"""
from __future__ import annotations

from mindspore import Tensor, nn

from .features import FeatureSpec, FeatureTap, last_at_each_reduction, taps_from_table
from .layers import (
    IN_CHANNELS_OPTION,
    PooledClassifierNet,
    check_positive_ints,
    conv_bn,
    fan_out_init,
    percent_tag,
)
from .registry import find_model, register_family, register_model

FAMILY = "mobilenet_v2"
STEM_CHANNELS, LAST_CHANNELS = 32, 1280
#: (expansion t, output channels c at width 1, repeats n, first stride s): the paper's Table 2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1))
#: Width multiplier -> multiply-adds at 224x224 in millions, as TF-slim's release lists them.
PUBLISHED_MFLOPS = {0.35: 59, 0.5: 97, 0.75: 209, 1.0: 300, 1.3: 509, 1.4: 582}
OPTIONS = {"in_channels": IN_CHANNELS_OPTION}
#: Index in `features` of the first block (after the stem's conv, BN and ReLU6).
FIRST_BLOCK = 3


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` (at least `divisor`), never more than 10 % below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def stage_channels(width: float) -> tuple[int, ...]:
    """(stem, each stage's output, last convolution) channels at a width multiplier."""
    return (make_divisible(STEM_CHANNELS * width),
            *(make_divisible(c * width) for _, c, _, _ in STAGES),
            make_divisible(LAST_CHANNELS * max(1.0, width)))


def stage_first_blocks() -> tuple[int, ...]:
    """Index of each stage's first block among the seventeen: (0, 1, 3, 6, 10, 13, 16)."""
    return tuple(sum(n for _, _, n, _ in STAGES[:k]) for k in range(len(STAGES)))


def block_strides() -> list[int]:
    """The depthwise stride of each of the seventeen blocks."""
    return [s if i == 0 else 1 for _, _, n, s in STAGES for i in range(n)]


def feature_table() -> tuple[tuple[str, int, int], ...]:
    """As a backbone, timm's `mobilenetv2_100` taps: the last block at each scale (16, 24, 32,
    96, 320 channels at width 1; r2 ... r32); the last 1x1 to 1280 (timm's `conv_head`,
    `features.20/21` here) widens for the classifier and is not built. (cell, index into
    `stage_channels(width)`, reduction)."""
    stage_of = [k for k, (_, _, n, _) in enumerate(STAGES) for _ in range(n)]
    return tuple((f"features.{FIRST_BLOCK + block}", stage_of[block] + 1, reduction)
                 for block, reduction in last_at_each_reduction(block_strides(), first_reduction=2))


class InvertedResidual(nn.Cell):
    """Expansion (left out when `expansion` is 1), depthwise 3x3 and linear projection, each
    with its BatchNorm; the input added back when the block keeps its shape."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(in_channels * expansion)
        layers = [] if expansion == 1 else [*conv_bn(in_channels, hidden), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, depthwise=True), nn.ReLU6(),
                   *conv_bn(hidden, out_channels)]
        self.layers = nn.SequentialCell(layers)
        self.residual = stride == 1 and in_channels == out_channels

    def construct(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class MobileNetV2(PooledClassifierNet):
    """MobileNetV2 for any input of 32x32 or more (global average pooling).

    Args:
        width: width multiplier (channels rounded to multiples of 8).
        num_classes: classifier outputs.
        dropout: dropout before the classifier while training (0.2 in every lineage).
        in_channels: input image channels.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2,
                 in_channels: int = 3) -> None:
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        self.width, self.dropout = width, dropout
        self.channels = stage_channels(width)
        stem, *stage_outs, last = self.channels
        layers, in_ch = [*conv_bn(in_channels, stem, 3, 2), nn.ReLU6()], stem
        for (expansion, _, repeats, stride), out_ch in zip(STAGES, stage_outs):
            for i in range(repeats):
                layers.append(InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, expansion))
                in_ch = out_ch
        layers += [*conv_bn(in_ch, last), nn.ReLU6()]
        self.features = nn.SequentialCell(layers)
        self.num_features = last
        self.classifier = self._classifier(num_classes)
        fan_out_init(self)

    def _classifier(self, num_classes: int) -> nn.SequentialCell:
        return nn.SequentialCell([nn.Dropout(p=self.dropout), nn.Dense(self.num_features, num_classes)])

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, e.g. to fine-tune on a new label set."""
        check_positive_ints(num_classes=num_classes)
        self.classifier = self._classifier(num_classes)
        fan_out_init(self.classifier)


def block_output_key(block: int) -> str:
    """Our name of block `block`'s projection weight (the first block has no expansion)."""
    return f"features.{FIRST_BLOCK + block}.layers.{3 if block == 0 else 6}.weight"


def recognise_checkpoint(shapes: dict[str, tuple]) -> tuple[str, dict] | None:
    """Model and classes of a checkpoint with our (mindcv's) names; the width from its channels."""
    last_conv = f"features.{FIRST_BLOCK + sum(n for _, _, n, _ in STAGES)}.weight"
    keys = ("features.0.weight", block_output_key(0), last_conv, "classifier.1.weight")
    if any(key not in shapes for key in keys):
        return None
    channels = (shapes["features.0.weight"][0],
                *(shapes[block_output_key(block)][0] for block in stage_first_blocks()),
                shapes[last_conv][0])
    name = find_model(FAMILY, lambda arch: stage_channels(arch["width"]) == channels,
                      f"MobileNetV2 channels {channels}")
    return name, {"num_classes": int(shapes["classifier.1.weight"][0])}


def feature_taps(arch: dict) -> tuple[FeatureTap, ...]:
    return taps_from_table(feature_table(), stage_channels(arch["width"]))


def arch_text(net: MobileNetV2) -> str:
    return f"width {net.width:g}, channels {', '.join(map(str, net.channels))}"


register_family(FAMILY, OPTIONS, recognise_checkpoint, arch_text,
                features=FeatureSpec(("features.*",), feature_taps, ("dropout",)))
for _width, _mflops in PUBLISHED_MFLOPS.items():
    register_model(f"mobilenet_v2_{percent_tag(_width)}", MobileNetV2, FAMILY,
                   published_mflops=(_mflops, "TF-slim"), width=_width)
