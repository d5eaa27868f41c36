"""Megvii's ShuffleNetV1 (github.com/megvii-model/ShuffleNet-Series) rebuilt from PyTorch primitives.

A reference for the weight converter (`shufflenet.lineages.shufflenet_v1_megvii`), its tests and
the PyTorch side of benchmarks. Its `state_dict()` uses Megvii's exact names (`first_conv.0.weight`,
`features.{i}.branch_main_1.{0,1,3,4}.*`, `features.{i}.branch_main_2.{0,1}.*`,
`classifier.0.weight`), so a released `.pth.tar` (after stripping `module.`) loads strictly.

Differences from our MindSpore network that the converter must bridge: the channel shuffle sits
after the 3x3 depthwise conv and its BatchNorm (ours is before), the pools pad 1 on each side,
the classifier has no bias, and inputs are BGR in 0..255 without normalisation.

The global pool is `AdaptiveAvgPool2d(1)`, which equals Megvii's `AvgPool2d(7)` at 224x224 and
also works at other input sizes. Channels come from `shufflenet.models.stage_channels`, which
reproduces Megvii's tables for every released model.

Importing this module needs PyTorch (`pip install -e ".[torch]"`); nothing else in the package
imports it at import time.
"""
from __future__ import annotations

from ..models import ModelDescription, model_arch
from ..models.shufflenet_v1 import STAGE_REPEATS, stage_channels
from ..utils.optional import import_torch

torch = import_torch(__name__)
nn = torch.nn


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Megvii's shuffle: reshape (b, c/g, g, h, w), swap axes 1 and 2 (same order as ours)."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels // groups, groups, height, width).permute(0, 2, 1, 3, 4)
    return x.reshape(batch, channels, height, width)


class MegviiShuffleV1Block(nn.Module):
    """Megvii's unit: pw (grouped) conv, BN, ReLU, 3x3 dw conv, BN, shuffle, pw-linear, BN."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int,
                 first_group: bool) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups
        mid = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, 1, 0, groups=1 if first_group else groups, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
        )
        self.branch_main_2 = nn.Sequential(
            nn.Conv2d(mid, branch_out, 1, 1, 0, groups=groups, bias=False),
            nn.BatchNorm2d(branch_out),
        )
        self.branch_proj = nn.AvgPool2d(3, 2, padding=1) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch_main_1(x)
        if self.groups > 1:
            out = _channel_shuffle(out, self.groups)
        out = self.branch_main_2(out)
        if self.stride == 1:
            return torch.relu(out + x)
        return torch.cat((self.branch_proj(x), torch.relu(out)), 1)


class MegviiShuffleNetV1(nn.Module):
    """Megvii's ShuffleNetV1 topology; see `build_megvii_shufflenet_v1`."""

    def __init__(self, groups: int, width: float, num_classes: int = 1000) -> None:
        super().__init__()
        self.channels = stage_channels(groups, width)
        stem = self.channels[0]
        self.first_conv = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        blocks, in_ch = [], stem
        for stage, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, self.channels[1:])):
            for i in range(repeats):
                blocks.append(MegviiShuffleV1Block(in_ch, out_ch, groups, 2 if i == 0 else 1,
                                                   first_group=stage == 0 and i == 0))
                in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.globalpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(in_ch, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.maxpool(self.first_conv(x)))
        return self.classifier(torch.flatten(self.globalpool(x), 1))


def build_megvii_shufflenet_v1(groups: int, width: float, num_classes: int = 1000) -> nn.Module:
    """Megvii's ShuffleNetV1 as a `torch.nn.Module` with its exact `state_dict` names.

    Released weights exist for groups 3 and 8 at widths 0.5, 1.0, 1.5 and 2.0; any combination
    that `stage_channels` accepts builds. The module is in training mode, as PyTorch's are:
    call `.eval()` before comparing outputs.
    """
    return MegviiShuffleNetV1(groups, width, num_classes)


def build_reference(description: ModelDescription) -> nn.Module:
    """The Megvii network of a converted model's description (for output comparisons)."""
    arch = model_arch(description.model)
    return build_megvii_shufflenet_v1(arch["groups"], arch["width"], description.num_classes)


def megvii_checkpoint(model: nn.Module) -> dict:
    """Wrap a model's weights as Megvii's released files are: `{'state_dict': {'module.…': …}}`."""
    return {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
