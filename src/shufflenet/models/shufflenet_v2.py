"""ShuffleNetV2: Ma, Zhang, Zheng, Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV 2018, https://arxiv.org/abs/1807.11164.

A unit splits its input channels in two, passes one half through (stride 1) or a depthwise
projection (stride 2), runs the other through 1x1, 3x3 depthwise, 1x1, and concatenates; a
channel shuffle mixes the halves for the next unit. Only depthwise and dense 1x1 convolutions,
so it runs on Ascend with no per-group split.

The lineages are two networks (`unit_layout`):
- `megvii`: Megvii's release, and the MindSpore model zoo and mindcv which port it. A stride-2
  unit's projection keeps the `in` channels and its main branch makes `out - in`; a unit
  shuffles at its input, taking the even channels as the passed-through half and the odd ones
  as the main branch's input.
- `torchvision`: each stride-2 branch makes `out / 2`; a unit splits its input into first and
  second halves (`chunk`) and shuffles after the concatenation (reshape (b, 2, c/2), transpose).
They coincide in shapes at 0.5x (stage input 24 = 48 / 2) and differ from 1.0x up; trained
weights are tied to their shuffle either way. Parameter names are mindcv's (`first_conv`,
`features.{i}.branch_main/branch_proj`, `conv_last`, `classifier`), so its checkpoints and the
zoo's load as they are; torchvision's and Megvii's convert (`shufflenet.lineages`).
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from .features import FeatureSpec, FeatureTap, stage_ends, taps_from_table
from .layers import (
    CLASSIFIER_BIAS_OPTION,
    IN_CHANNELS_OPTION,
    POOL_PADDING_OPTION,
    check_bool,
    check_positive_ints,
    conv_bn,
    make_pool,
    megvii_init,
    new_classifier,
    width_tag,
)
from .registry import ModelOption, list_models, model_arch, register_family, register_model

FAMILY = "shufflenet_v2"
UNIT_LAYOUTS = ("torchvision", "megvii")
#: (stem, stage 2, stage 3, stage 4, last conv) output channels per width multiplier.
STAGE_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
#: As a backbone (timm has no ShuffleNet; mindcv taps the same cells): the stem (r2), its max
#: pool (r4) and the last unit of each stage (r8, 16, 32), as NanoDet and PicoDet take stages
#: 2-4. `conv_last` is not built: like MobileNetV2's last 1x1 (timm's `conv_head`), it widens the
#: map for the classifier only. (cell, index into `STAGE_CHANNELS[width]`, reduction):
FEATURE_TABLE = (("first_conv", 0, 2), ("max_pool", 0, 4),
                 *((f"features.{end}", k + 1, 8 << k) for k, end in enumerate(stage_ends(STAGE_REPEATS))))
#: Megvii's published multiply-adds at 224x224, in millions.
PUBLISHED_MFLOPS = {0.5: 41, 1.0: 146, 1.5: 299, 2.0: 591}
OPTIONS = {
    "unit_layout": ModelOption(str, "ShuffleNetV2 units as torchvision builds them (stride-2 branches "
                               "of out/2 channels, shuffle after the concat) or as Megvii, the zoo "
                               "and mindcv do (projection of in channels, shuffle at the input)",
                               UNIT_LAYOUTS),
    "pool_padding": POOL_PADDING_OPTION,
    "classifier_bias": CLASSIFIER_BIAS_OPTION,
    "in_channels": IN_CHANNELS_OPTION,
}


def main_branch(in_channels: int, mid_channels: int, out_channels: int, stride: int,
                kernel_size: int = 3, activation: type = nn.ReLU) -> list[nn.Cell]:
    """1x1, activation, kxk depthwise (stride), 1x1, activation: `branch_main.{0..7}`."""
    return [*conv_bn(in_channels, mid_channels), activation(),
            *conv_bn(mid_channels, mid_channels, kernel_size, stride, depthwise=True),
            *conv_bn(mid_channels, out_channels), activation()]


def projection_branch(in_channels: int, out_channels: int, kernel_size: int = 3,
                      activation: type = nn.ReLU) -> nn.SequentialCell:
    """A stride-2 unit's shortcut: kxk depthwise/s2, 1x1, activation: `branch_proj.{0..4}`."""
    return nn.SequentialCell([*conv_bn(in_channels, in_channels, kernel_size, 2, depthwise=True),
                              *conv_bn(in_channels, out_channels), activation()])


def split_even_odd(x: Tensor) -> tuple[Tensor, Tensor]:
    """Megvii's shuffle at a unit's input: (even channels, odd channels)."""
    _, channels, height, width = x.shape
    x = ops.reshape(x, (-1, channels // 2, 2, height, width))
    return x[:, :, 0], x[:, :, 1]


def interleave_halves(x: Tensor) -> Tensor:
    """torchvision's `channel_shuffle(x, 2)`: channel 2k + j of the output is channel
    j * c/2 + k of the input."""
    _, channels, height, width = x.shape
    x = ops.reshape(x, (-1, 2, channels // 2, height, width))
    x = ops.transpose(x, (0, 2, 1, 3, 4))
    return ops.reshape(x, (-1, channels, height, width))


class ShuffleV2Block(nn.Cell):
    """A ShuffleNetV2 unit (paper Fig. 3 c/d) around prebuilt branches.

    `branch_proj` is None for stride 1: the passed-through half of the input takes its place.
    """

    def __init__(self, branch_main: nn.Cell, branch_proj: nn.Cell | None, unit_layout: str,
                 in_channels: int) -> None:
        super().__init__()
        if unit_layout not in UNIT_LAYOUTS:
            raise ValueError(f"unit_layout must be one of {UNIT_LAYOUTS}, got {unit_layout!r}")
        self.branch_main = branch_main
        self.branch_proj = branch_proj
        self.torchvision = unit_layout == "torchvision"
        self.half = in_channels // 2

    def construct(self, x: Tensor) -> Tensor:
        if self.branch_proj is not None:
            out = ops.concat((self.branch_proj(x), self.branch_main(x)), 1)
        elif self.torchvision:
            out = ops.concat((x[:, :self.half], self.branch_main(x[:, self.half:])), 1)
        else:
            kept, main = split_even_odd(x)
            out = ops.concat((kept, self.branch_main(main)), 1)
        return interleave_halves(out) if self.torchvision else out


def shufflenet_v2_unit(in_channels: int, out_channels: int, stride: int,
                       unit_layout: str) -> ShuffleV2Block:
    """A unit of the plain ShuffleNetV2 in either lineage's channel split."""
    half = out_channels // 2
    if stride == 1:
        return ShuffleV2Block(nn.SequentialCell(main_branch(half, half, half, 1)), None, unit_layout,
                              in_channels)
    proj_out = in_channels if unit_layout == "megvii" else half
    main = nn.SequentialCell(main_branch(in_channels, half, out_channels - proj_out, stride))
    return ShuffleV2Block(main, projection_branch(in_channels, proj_out), unit_layout, in_channels)


class ShuffleNetV2(nn.Cell):
    """ShuffleNetV2 for any input of 32x32 or more (global average pooling).

    Args:
        width: width multiplier (0.5, 1.0, 1.5 or 2.0; `STAGE_CHANNELS`).
        num_classes: classifier outputs.
        dropout: dropout before the classifier while training (Megvii's 2.0x: 0.2).
        unit_layout: "torchvision" or "megvii" (the zoo's and mindcv's too); see the module.
        pool_padding: the stem's 3x3/s2 max pool: "symmetric" (torchvision, Megvii) or "same"
            (zoo, mindcv).
        classifier_bias: Dense with bias (torchvision) or without (Megvii, zoo, mindcv).
        in_channels: input image channels.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.0,
                 unit_layout: str = "torchvision", pool_padding: str = "symmetric",
                 classifier_bias: bool = True, in_channels: int = 3) -> None:
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        check_bool("classifier_bias", classifier_bias)
        if width not in STAGE_CHANNELS:
            raise ValueError(f"width must be one of {sorted(STAGE_CHANNELS)}, got {width!r}")
        self.width, self.unit_layout, self.pool_padding = width, unit_layout, pool_padding
        self.classifier_bias = classifier_bias
        self.channels = STAGE_CHANNELS[width]
        stem, *stages, last = self.channels
        self.first_conv = nn.SequentialCell([*conv_bn(in_channels, stem, 3, 2), nn.ReLU()])
        self.max_pool = make_pool("max", pool_padding)
        units, in_ch = [], stem
        for repeats, out_ch in zip(STAGE_REPEATS, stages):
            for i in range(repeats):
                units.append(shufflenet_v2_unit(in_ch, out_ch, 2 if i == 0 else 1, unit_layout))
                in_ch = out_ch
        self.features = nn.SequentialCell(units)
        self.conv_last = nn.SequentialCell([*conv_bn(in_ch, last), nn.ReLU()])
        self.num_features = last
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = nn.Dense(last, num_classes, has_bias=classifier_bias)
        megvii_init(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, e.g. to fine-tune on a new label set."""
        self.classifier = new_classifier(self.num_features, num_classes, self.classifier_bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv_last(self.features(self.max_pool(self.first_conv(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = ops.mean(x, (2, 3))
        return x if pre_logits else self.classifier(self.dropout(x))

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def first_units(repeats: tuple[int, ...]) -> tuple[int, ...]:
    """Indices in `features` of each stage's first (stride-2) unit: (0, 4, 12) for 4-8-4."""
    return tuple(sum(repeats[:stage]) for stage in range(len(repeats)))


def model_for_width(width: float) -> str | None:
    return next((name for name in list_models(FAMILY) if model_arch(name)["width"] == width), None)


def width_of_channels(channels: tuple[int, ...]) -> float:
    """The width multiplier whose (stem, stages, last conv) channels these are."""
    for width, expected in STAGE_CHANNELS.items():
        if expected == tuple(channels):
            return width
    raise ValueError(f"channels {tuple(channels)} match no ShuffleNetV2 width "
                     f"({', '.join(f'{w:g}x' for w in STAGE_CHANNELS)})")


def recognise_checkpoint(shapes: dict[str, tuple]) -> tuple[str, dict] | None:
    """Model, classes and unit layout of a checkpoint with our (mindcv's, the zoo's) names.

    Stage widths are the two branches of each stage's first unit added up. Files with these
    names and no stored description come from mindcv or the zoo, which port Megvii: the layout
    is Megvii's unless the projection's width says torchvision's (they coincide at 0.5x).
    """
    if any(key not in shapes for key in ("conv_last.0.weight", "features.0.branch_proj.2.weight",
                                         "classifier.weight")) or "LastSE.SE_opr.1.weight" in shapes:
        return None  # not ShuffleNetV2, or ShuffleNetV2+
    stages = tuple(shapes[f"features.{i}.branch_proj.2.weight"][0]
                   + shapes[f"features.{i}.branch_main.5.weight"][0] for i in first_units(STAGE_REPEATS))
    stem, last = shapes["first_conv.0.weight"][0], shapes["conv_last.0.weight"][0]
    width = width_of_channels((stem, *stages, last))
    megvii = shapes["features.0.branch_proj.2.weight"][0] == stem
    num_classes = shapes["classifier.weight"][0]
    options = {"unit_layout": "megvii" if megvii else "torchvision",
               "classifier_bias": "classifier.bias" in shapes}
    if megvii:
        options["pool_padding"] = "same"
    return model_for_width(width), {"num_classes": int(num_classes), "options": options}


def feature_taps(arch: dict) -> tuple[FeatureTap, ...]:
    return taps_from_table(FEATURE_TABLE, STAGE_CHANNELS[arch["width"]])


def arch_text(net: ShuffleNetV2) -> str:
    return f"{net.width:g}x {net.unit_layout}, channels {', '.join(map(str, net.channels))}"


register_family(FAMILY, OPTIONS, recognise_checkpoint, arch_text,
                {"unit_layout": "megvii", "classifier_bias": False},
                features=FeatureSpec(("first_conv", "max_pool", "features.*"), feature_taps,
                                     ("classifier_bias", "dropout")))
for _width in STAGE_CHANNELS:
    register_model(f"shufflenet_v2_x{width_tag(_width)}", ShuffleNetV2, FAMILY,
                   published_mflops=(PUBLISHED_MFLOPS[_width], "Megvii"),
                   width=_width, dropout=0.2 if _width == 2.0 else 0.0)
