"""ShuffleNetV2+: Megvii's strengthened ShuffleNetV2 (github.com/megvii-model/ShuffleNet-Series,
`ShuffleNetV2+`), found by their single-path one-shot architecture search: hard-swish from the
second stage on, squeeze-and-excitation in the last two, 3x3/5x5/7x7 and "Xception" (three
depthwise convolutions) units in a fixed order, and a 1280-wide head with its own SE and a
fully connected layer. 156 / 222 / 360 MFLOPs, 74.1 / 75.7 / 77.1 % top-1 (Small / Medium /
Large). No MindSpore zoo, mindcv, torchvision or timm hosts it.

Units are ShuffleNetV2's in Megvii's layout (`shufflenet_v2.ShuffleV2Block`). Parameter names
are Megvii's (`features.{i}.branch_main.{k}`, `SE_opr`, `LastSE`, `fc.0`) with MindSpore's
BatchNorm names and `classifier` for `classifier.0`, so converting a release is a renaming.
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from .features import FeatureSpec, FeatureTap, stage_ends, taps_from_table
from .layers import IN_CHANNELS_OPTION, check_positive_ints, conv_bn, megvii_init, new_classifier
from .registry import list_models, model_arch, register_family, register_model
from .shufflenet_v2 import ShuffleV2Block, first_units, main_branch, projection_branch

FAMILY = "shufflenet_v2_plus"
#: (stem, stage 1-4, last conv) output channels per model size.
STAGE_CHANNELS = {
    "small": (16, 36, 104, 208, 416, 1280),
    "medium": (16, 48, 128, 256, 512, 1280),
    "large": (16, 68, 168, 336, 672, 1280),
}
STAGE_REPEATS = (4, 4, 8, 4)
#: The searched unit of each of the 20 positions: 3, 5, 7 = ShuffleNetV2 unit with that depthwise
#: kernel, "x" = Xception unit. Megvii's `architecture` list [0, 0, 3, 1, ...] in these terms.
ARCHITECTURE = (3, 3, "x", 5, 5, 5, 3, 3, 7, 3, 7, 5, 5, 3, 7, 3, 7, 5, "x", 7)
#: As a backbone: the stem (r2; no max pool here) and the last unit of each of the four stages
#: (r4, 8, 16, 32). `conv_last`, `LastSE` and `fc` are the classifier's (its 1280-wide head) and
#: are not built. (cell, index into `STAGE_CHANNELS[size]`, reduction):
FEATURE_TABLE = (("first_conv", 0, 2),
                 *((f"features.{end}", k + 1, 4 << k) for k, end in enumerate(stage_ends(STAGE_REPEATS))))
PUBLISHED_MFLOPS = {"small": 156, "medium": 222, "large": 360}
OPTIONS = {"in_channels": IN_CHANNELS_OPTION}


class HardSwish(nn.Cell):
    """x * relu6(x + 3) / 6, in Megvii's order of operations; exports to ONNX as Clip, Mul, Div."""

    def construct(self, x: Tensor) -> Tensor:
        return x * (ops.relu6(x + 3) / 6)


class GlobalMean(nn.Cell):
    def construct(self, x: Tensor) -> Tensor:
        return ops.mean(x, (2, 3), keep_dims=True)


class SELayer(nn.Cell):
    """Squeeze-and-excitation with a hard-sigmoid gate: x * relu6(se(x) + 3) / 6."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.SE_opr = nn.SequentialCell([
            GlobalMean(), *conv_bn(channels, channels // 4), nn.ReLU(),
            nn.Conv2d(channels // 4, channels, 1, has_bias=False)])

    def construct(self, x: Tensor) -> Tensor:
        return x * (ops.relu6(self.SE_opr(x) + 3) / 6)


def xception_branch(in_channels: int, mid_channels: int, out_channels: int, stride: int,
                    activation: type) -> list[nn.Cell]:
    """Three (3x3 depthwise, 1x1, activation) in a row: `branch_main.{0..14}`."""
    layers = []
    for conv_in, conv_out in ((in_channels, mid_channels), (mid_channels, mid_channels),
                              (mid_channels, out_channels)):
        layers += [*conv_bn(conv_in, conv_in, 3, stride, depthwise=True), *conv_bn(conv_in, conv_out),
                   activation()]
    return layers


def plus_unit(in_channels: int, out_channels: int, stride: int, choice, stage: int) -> ShuffleV2Block:
    """The unit of one searched position: ReLU in stage 1, hard-swish after, SE in stages 3-4."""
    activation = nn.ReLU if stage == 0 else HardSwish
    inp = in_channels if stride == 2 else in_channels // 2
    mid, out = out_channels // 2, out_channels - inp
    if choice == "x":
        layers = xception_branch(inp, mid, out, stride, activation)
    else:
        layers = main_branch(inp, mid, out, stride, choice, activation)
    if stage >= 2:
        layers.append(SELayer(out))
    proj = projection_branch(inp, inp, 3 if choice == "x" else choice, activation) if stride == 2 else None
    return ShuffleV2Block(nn.SequentialCell(layers), proj, "megvii", in_channels)


class ShuffleNetV2Plus(nn.Cell):
    """ShuffleNetV2+ Small, Medium or Large for any input of 32x32 or more.

    Args:
        size: "small", "medium" or "large" (`STAGE_CHANNELS`).
        num_classes: classifier outputs.
        in_channels: input image channels.
    """

    def __init__(self, size: str = "large", num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        if size not in STAGE_CHANNELS:
            raise ValueError(f"size must be one of {tuple(STAGE_CHANNELS)}, got {size!r}")
        self.size = size
        self.channels = STAGE_CHANNELS[size]
        stem, *stages, last = self.channels
        self.first_conv = nn.SequentialCell([*conv_bn(in_channels, stem, 3, 2), HardSwish()])
        units, in_ch, choices = [], stem, iter(ARCHITECTURE)
        for stage, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, stages)):
            for i in range(repeats):
                units.append(plus_unit(in_ch, out_ch, 2 if i == 0 else 1, next(choices), stage))
                in_ch = out_ch
        self.features = nn.SequentialCell(units)
        self.conv_last = nn.SequentialCell([*conv_bn(in_ch, last), HardSwish()])
        self.LastSE = SELayer(last)
        self.fc = nn.SequentialCell([nn.Dense(last, last, has_bias=False), HardSwish()])
        self.dropout = nn.Dropout(p=0.2)
        self.num_features = last
        self.classifier = nn.Dense(last, num_classes, has_bias=False)
        megvii_init(self, small_std=("first_conv", "SE"))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, e.g. to fine-tune on a new label set."""
        self.classifier = new_classifier(self.num_features, num_classes, bias=False)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv_last(self.features(self.first_conv(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.fc(ops.flatten(self.LastSE(ops.mean(x, (2, 3), keep_dims=True))))
        return x if pre_logits else self.classifier(self.dropout(x))

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def recognise_checkpoint(shapes: dict[str, tuple]) -> tuple[str, dict] | None:
    """Model and classes of a checkpoint with our ShuffleNetV2+ names, from its stage widths: a
    stage's first unit projects the previous stage's width onto itself."""
    if "LastSE.SE_opr.1.weight" not in shapes or "fc.0.weight" not in shapes:
        return None
    stages = (*(shapes[f"features.{i}.branch_proj.2.weight"][0] for i in first_units(STAGE_REPEATS)[1:]),
              shapes["conv_last.0.weight"][1])
    for name in list_models(FAMILY):
        if STAGE_CHANNELS[model_arch(name)["size"]][1:5] == stages:
            return name, {"num_classes": int(shapes["classifier.weight"][0])}
    raise ValueError(f"stage channels {stages} match no ShuffleNetV2+ size ({', '.join(STAGE_CHANNELS)})")


def feature_taps(arch: dict) -> tuple[FeatureTap, ...]:
    return taps_from_table(FEATURE_TABLE, STAGE_CHANNELS[arch["size"]])


def arch_text(net: ShuffleNetV2Plus) -> str:
    return f"{net.size}, channels {', '.join(map(str, net.channels))}"


register_family(FAMILY, OPTIONS, recognise_checkpoint, arch_text,
                features=FeatureSpec(("first_conv", "features.*"), feature_taps))
for _size in STAGE_CHANNELS:
    register_model(f"shufflenet_v2_plus_{_size}", ShuffleNetV2Plus, FAMILY,
                   published_mflops=(PUBLISHED_MFLOPS[_size], "Megvii"), size=_size)
