"""ShuffleNetV1: Zhang, Zhou, Lin, Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural
Network for Mobile Devices", CVPR 2018, https://arxiv.org/abs/1707.01083.

Parameter names follow the MindSpore tutorial, the model zoo and mindcv (`first_conv`,
`features.{i}.branch_main_{1,2}`, `convs.{k}`, `classifier`), so their checkpoints load as they
are; Megvii's PyTorch release is hosted with `pool_padding="symmetric"`, `classifier_bias=False`
and the converter in `shufflenet.lineages.shufflenet_v1_megvii`.
"""
from __future__ import annotations

import math

from mindspore import Tensor, nn, ops

from .features import FeatureSpec, FeatureTap, stage_ends, taps_from_table
from .layers import (
    CLASSIFIER_BIAS_OPTION,
    GROUP_CONV_IMPLS,
    IN_CHANNELS_OPTION,
    POOL_PADDING_OPTION,
    GroupConv,
    channel_shuffle,
    check_bool,
    check_positive_ints,
    make_pool,
    megvii_init,
    new_classifier,
    width_tag,
)
from .registry import ModelOption, list_models, model_arch, register_family, register_model

FAMILY = "shufflenet_v1"

#: Paper Table 1: output channels of stage 2 at width 1.0x, per group count.
STAGE2_CHANNELS_1X = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
#: Output channels of the stem (conv1) at width 1.0x.
STEM_CHANNELS_1X = 24
#: Blocks per stage (stages 2, 3, 4); the first block of each has stride 2.
STAGE_REPEATS = (4, 8, 4)
#: Width multipliers registered per group count: the paper's Table 2 plus Megvii's 1.5x, 2.0x.
WIDTHS = {1: (0.25, 0.5, 1.0), 2: (0.25, 0.5, 1.0), 3: (0.25, 0.5, 1.0, 1.5, 2.0),
          4: (0.25, 0.5, 1.0), 8: (0.25, 0.5, 1.0, 1.5, 2.0)}
#: The network options every command exposes as flags (`--pool-padding`, ...).
OPTIONS = {
    "pool_padding": POOL_PADDING_OPTION,
    "classifier_bias": CLASSIFIER_BIAS_OPTION,
    "group_conv": ModelOption(str, "grouped 1x1 convs as per-group Conv2d (split, the only form "
                              "Ascend runs), one grouped conv (native), or auto", GROUP_CONV_IMPLS),
    "in_channels": IN_CHANNELS_OPTION,
}
#: Published complexity at 224x224 in MFLOPs (multiply-adds): Megvii's release where it has the
#: model, else the paper's Table 2 (140 / 38 / 13 at 1x / 0.5x / 0.25x for every group count).
PUBLISHED_MFLOPS = {
    **{(g, w): (m, "paper") for g in WIDTHS for w, m in ((1.0, 140), (0.5, 38), (0.25, 13))},
    (3, 0.5): (38, "Megvii"), (3, 1.0): (138, "Megvii"), (3, 1.5): (292, "Megvii"),
    (3, 2.0): (524, "Megvii"), (8, 0.5): (40, "Megvii"), (8, 1.0): (138, "Megvii"),
    (8, 1.5): (290, "Megvii"), (8, 2.0): (522, "Megvii"),
}


#: As a backbone (no timm model to follow): the stem (r2), the max pool after it (r4) and the
#: last unit of each stage (r8, 16, 32): every scale at its deepest map, as timm taps its
#: MobileNets. (cell, index into `stage_channels(groups, width)`, reduction):
FEATURE_TABLE = (("first_conv", 0, 2), ("maxpool", 0, 4),
                 *((f"features.{end}", k + 1, 8 << k) for k, end in enumerate(stage_ends(STAGE_REPEATS))))


def _round_to_multiple(value: float, divisor: int, up: bool = False) -> int:
    steps = math.ceil(value / divisor) if up else math.floor(value / divisor + 0.5)
    return max(divisor, steps * divisor)


def stage_channels(groups: int, width: float) -> tuple[int, int, int, int]:
    """Output channels of (stem, stage 2, stage 3, stage 4) for a group count and width.

    Stage 2 is the paper's Table 1 width times `width`, rounded to the nearest multiple of
    4 * groups (ties up) so the bottleneck (a quarter of the stage width) splits into groups;
    stages 3 and 4 double it. The stem is 24 * width, at least 12 and widened only at whole
    multipliers above 1 (Megvii's 1.5x keeps 24), rounded up to a multiple of `groups` so the
    first stride-2 block's branch (stage 2 minus stem) splits into groups. This reproduces
    Megvii's eight released models channel for channel, and the 12-channel floor gives the
    paper's 13 MFLOPs at 0.25x (a 6-channel stem would give 11).
    """
    if groups not in STAGE2_CHANNELS_1X:
        raise ValueError(f"groups must be one of {sorted(STAGE2_CHANNELS_1X)}, got {groups}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    stage2 = _round_to_multiple(STAGE2_CHANNELS_1X[groups] * width, 4 * groups)
    stem_width = max(width, 0.5) if width < 1 else math.floor(width)
    stem = _round_to_multiple(STEM_CHANNELS_1X * stem_width, groups, up=True)
    return stem, stage2, 2 * stage2, 4 * stage2


class ShuffleV1Block(nn.Cell):
    """ShuffleNet unit (paper Fig. 2 b/c): grouped 1x1, shuffle, 3x3 depthwise, grouped 1x1.

    Stride 1 adds the input back; stride 2 concatenates a 3x3 average-pooled shortcut, so the
    main branch produces only `out_channels - in_channels` channels. The first block of the
    network (`first_group`) uses an ungrouped first 1x1 conv, as its input is only the stem.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        stride: int,
        first_group: bool = False,
        pool_padding: str = "same",
        group_conv: str = "auto",
    ) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups
        mid_channels = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        self.branch_main_1 = nn.SequentialCell(
            GroupConv(in_channels, mid_channels, 1 if first_group else groups, impl=group_conv),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(),
        )
        self.branch_main_2 = nn.SequentialCell(
            nn.Conv2d(mid_channels, mid_channels, 3, stride=stride, pad_mode="pad", padding=1,
                      group=mid_channels, has_bias=False),
            nn.BatchNorm2d(mid_channels),
            GroupConv(mid_channels, branch_out, groups, impl=group_conv),
            nn.BatchNorm2d(branch_out),
        )
        self.branch_proj = make_pool("avg", pool_padding) if stride == 2 else None
        self.relu = nn.ReLU()

    def construct(self, x: Tensor) -> Tensor:
        out = self.branch_main_1(x)
        if self.groups > 1:
            out = channel_shuffle(out, self.groups)
        out = self.branch_main_2(out)
        if self.stride == 1:
            return self.relu(x + out)
        return ops.concat((self.branch_proj(x), self.relu(out)), 1)


class ShuffleNetV1(nn.Cell):
    """ShuffleNetV1 for any input of 32x32 or more (global average pooling, no `AvgPool2d(7)`).

    Args:
        groups: group count g of the 1x1 convolutions (1, 2, 3, 4 or 8).
        width: width multiplier s (paper Table 2).
        num_classes: classifier outputs.
        pool_padding: "same" (tutorial, zoo, mindcv) or "symmetric" (Megvii, PyTorch).
        classifier_bias: Dense with bias (tutorial, zoo) or without (mindcv, Megvii).
        group_conv: "split" (per-group convs, required on Ascend), "native" (one grouped
            conv), or "auto" (split on Ascend, native elsewhere). Same parameters either way.
        in_channels: input image channels.
    """

    def __init__(
        self,
        groups: int = 3,
        width: float = 1.0,
        num_classes: int = 1000,
        pool_padding: str = "same",
        classifier_bias: bool = True,
        group_conv: str = "auto",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        check_bool("classifier_bias", classifier_bias)
        self.groups = groups
        self.width = width
        self.pool_padding = pool_padding
        self.classifier_bias = classifier_bias
        self.channels = stage_channels(groups, width)
        stem = self.channels[0]

        self.first_conv = nn.SequentialCell(
            nn.Conv2d(in_channels, stem, 3, stride=2, pad_mode="pad", padding=1, has_bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(),
        )
        self.maxpool = make_pool("max", pool_padding)
        blocks = []
        in_ch = stem
        for stage, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, self.channels[1:])):
            for i in range(repeats):
                blocks.append(
                    ShuffleV1Block(in_ch, out_ch, groups, stride=2 if i == 0 else 1,
                                   first_group=stage == 0 and i == 0,
                                   pool_padding=pool_padding, group_conv=group_conv)
                )
                in_ch = out_ch
        self.features = nn.SequentialCell(blocks)
        self.num_features = in_ch
        self.classifier = nn.Dense(in_ch, num_classes, has_bias=classifier_bias)
        megvii_init(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, e.g. to fine-tune on a new label set."""
        self.classifier = new_classifier(self.num_features, num_classes, self.classifier_bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(self.maxpool(self.first_conv(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = ops.mean(x, (2, 3))
        return x if pre_logits else self.classifier(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def model_for_channels(groups: int, channels: tuple[int, ...]) -> str | None:
    """The registered ShuffleNetV1 whose group count and (stem, stage 2-4) channels are these."""
    for name in list_models(FAMILY):
        arch = model_arch(name)
        if arch["groups"] == groups and stage_channels(groups, arch["width"]) == tuple(channels):
            return name
    return None


def recognise_checkpoint(shapes: dict[str, tuple]) -> tuple[str, dict] | None:
    """Model and classes of a checkpoint with the tutorial's/zoo's names, from its shapes.

    The group count is the number of `convs.{k}` of block 1's first grouped conv (the first
    block's is ungrouped); the stage widths come from the stem, block 1 and the classifier.
    """
    block1 = "features.1.branch_main_1.0.convs."
    needed = ("first_conv.0.weight", "classifier.weight", block1 + "0.weight")
    if any(key not in shapes for key in needed):
        return None
    groups = sum(1 for key in shapes if key.startswith(block1) and key.endswith(".weight"))
    stage2 = shapes[block1 + "0.weight"][1] * groups
    num_classes, stage4 = shapes["classifier.weight"]
    channels = (shapes["first_conv.0.weight"][0], stage2, 2 * stage2, stage4)
    name = model_for_channels(groups, channels)
    if name is None:
        raise ValueError(f"groups={groups} and channels {channels} match no registered ShuffleNetV1; "
                         "pass --model (see `shufflenet summary`)")
    return name, {"num_classes": int(num_classes),
                  "options": {"classifier_bias": "classifier.bias" in shapes}}


def feature_taps(arch: dict) -> tuple[FeatureTap, ...]:
    return taps_from_table(FEATURE_TABLE, stage_channels(arch["groups"], arch["width"]))


def arch_text(net: ShuffleNetV1) -> str:
    return f"g{net.groups} {net.width:g}x, channels {', '.join(map(str, net.channels))}"


register_family(FAMILY, OPTIONS, recognise_checkpoint, arch_text, {"classifier_bias": False},
                features=FeatureSpec(("first_conv", "maxpool", "features.*"), feature_taps,
                                     ("classifier_bias",)))
for _groups, _widths in WIDTHS.items():
    for _width in _widths:
        register_model(f"shufflenet_v1_g{_groups}_x{width_tag(_width)}", ShuffleNetV1, FAMILY,
                       published_mflops=PUBLISHED_MFLOPS.get((_groups, _width)),
                       groups=_groups, width=_width)
