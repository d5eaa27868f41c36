"""MobileNetV1: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", 2017, https://arxiv.org/abs/1704.04861.

A 3x3/s2 convolution, thirteen depthwise-separable blocks (3x3 depthwise + BN + activation, 1x1
+ BN + activation) up to 1024 channels, global average pooling and a Dense classifier with a
bias; the width multiplier scales every layer (`int(channels * width)`, as mindcv; timm rounds
to multiples of 8, which gives the same channels at every width registered here).

Parameter names are mindcv's (`features.0/1` the stem, `features.{3..15}.{0,1,3,4}` the blocks,
`classifier`), so its checkpoints load as they are. The lineages differ in the activation only:
ReLU in the paper and mindcv, ReLU6 in timm (`mobilenetv1_100`), which `activation` selects.
"""
from __future__ import annotations

from mindspore import nn

from .features import FeatureSpec, FeatureTap, last_at_each_reduction, taps_from_table
from .layers import (
    IN_CHANNELS_OPTION,
    PooledClassifierNet,
    check_positive_ints,
    conv_bn,
    fan_out_init,
    percent_tag,
)
from .registry import ModelOption, find_model, register_family, register_model

FAMILY = "mobilenet_v1"
STEM_CHANNELS = 32
#: (output channels at width 1, depthwise stride) of the thirteen blocks: the paper's Table 1.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
          (512, 1), (512, 1), (1024, 2), (1024, 1))
#: Width multiplier -> the paper's multiply-adds at 224x224, in millions (its Table 6).
PUBLISHED_MFLOPS = {0.25: 41, 0.5: 149, 0.75: 325, 1.0: 569}
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}
OPTIONS = {
    "activation": ModelOption(str, "activation after every BatchNorm: ReLU (the paper, mindcv) or "
                              "ReLU6 (timm)", tuple(ACTIVATIONS)),
    "in_channels": IN_CHANNELS_OPTION,
}
#: Index in `features` of the first block (after the stem's conv, BN and activation).
FIRST_BLOCK = 3


#: As a backbone, timm's `mobilenetv1_100` taps: the last block at each scale (blocks 1, 3, 5, 11,
#: 13 of the paper's thirteen: 64, 128, 256, 512, 1024 channels at width 1; r2 ... r32), read
#: from `BLOCKS`' strides. (cell, index into `block_channels(width)`, reduction):
FEATURE_TABLE = tuple((f"features.{FIRST_BLOCK + block}", block + 1, reduction) for block, reduction
                      in last_at_each_reduction([stride for _, stride in BLOCKS], first_reduction=2))


def block_channels(width: float) -> tuple[int, ...]:
    """(stem, each block's output) channels at a width multiplier."""
    return tuple(int(channels * width) for channels in (STEM_CHANNELS, *(c for c, _ in BLOCKS)))


class MobileNetV1(PooledClassifierNet):
    """MobileNetV1 for any input of 32x32 or more (global average pooling).

    Args:
        width: width multiplier of every layer.
        num_classes: classifier outputs.
        activation: "relu" (the paper, mindcv) or "relu6" (timm).
        in_channels: input image channels.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, activation: str = "relu",
                 in_channels: int = 3) -> None:
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.width, self.activation = width, activation
        act = ACTIVATIONS[activation]
        self.channels = block_channels(width)
        stem, *outs = self.channels
        layers, in_ch = [*conv_bn(in_channels, stem, 3, 2), act()], stem
        for out_ch, (_, stride) in zip(outs, BLOCKS):
            layers.append(nn.SequentialCell([*conv_bn(in_ch, in_ch, 3, stride, depthwise=True), act(),
                                             *conv_bn(in_ch, out_ch), act()]))
            in_ch = out_ch
        self.features = nn.SequentialCell(layers)
        self.num_features = in_ch
        self.classifier = nn.Dense(in_ch, num_classes)
        fan_out_init(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, e.g. to fine-tune on a new label set."""
        check_positive_ints(num_classes=num_classes)
        self.classifier = nn.Dense(self.num_features, num_classes)
        fan_out_init(self.classifier)


def recognise_checkpoint(shapes: dict[str, tuple]) -> tuple[str, dict] | None:
    """Model and classes of a checkpoint with our (mindcv's) names; the width from its channels.

    The activation has no weights: files without a stored description are taken as mindcv's
    (ReLU); timm's get ReLU6 when `shufflenet convert` imports them.
    """
    last = FIRST_BLOCK + len(BLOCKS) - 1
    if any(key not in shapes for key in ("features.0.weight", f"features.{FIRST_BLOCK}.0.weight",
                                         f"features.{last}.3.weight", "classifier.weight")):
        return None
    channels = (shapes["features.0.weight"][0],
                *(shapes[f"features.{FIRST_BLOCK + i}.3.weight"][0] for i in range(len(BLOCKS))))
    name = find_model(FAMILY, lambda arch: block_channels(arch["width"]) == channels,
                      f"MobileNetV1 channels {channels}")
    return name, {"num_classes": int(shapes["classifier.weight"][0]), "options": {"activation": "relu"}}


def feature_taps(arch: dict) -> tuple[FeatureTap, ...]:
    return taps_from_table(FEATURE_TABLE, block_channels(arch["width"]))


def arch_text(net: MobileNetV1) -> str:
    return f"width {net.width:g}, {net.activation}, channels {net.channels[0]}-{net.channels[-1]}"


register_family(FAMILY, OPTIONS, recognise_checkpoint, arch_text,
                features=FeatureSpec(("features.*",), feature_taps))
for _width, _mflops in PUBLISHED_MFLOPS.items():
    register_model(f"mobilenet_v1_{percent_tag(_width)}", MobileNetV1, FAMILY,
                   published_mflops=(_mflops, "Howard et al."), width=_width)
