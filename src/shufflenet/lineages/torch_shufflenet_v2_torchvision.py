"""torchvision's ShuffleNetV2 (`torchvision.models.shufflenet_v2_x*`) rebuilt from PyTorch primitives.

A reference for the weight converter from torchvision checkpoints, its tests and the PyTorch side
of benchmarks, usable without installing torchvision. Its `state_dict()` uses torchvision's exact
names (`conv1.{0,1}.*`, `stage{2,3,4}.{i}.branch1.{0..3}.*`, `stage{2,3,4}.{i}.branch2.{0..6}.*`,
`conv5.{0,1}.*`, `fc.{weight,bias}`), so a released `.pth` loads strictly.

What the converter must bridge: a stride-2 unit's two branches each give half the output
channels (Megvii's give `inp` and `oup - inp`), the channel shuffle sits at the unit output
(interleaving the two halves; Megvii splits even/odd channels at the next unit's input), the
global pool is a mean over H and W, the classifier has a bias, and inputs are RGB in 0..1
normalised with the ImageNet mean and std.

Importing this module needs PyTorch (`pip install -e ".[torch]"`); nothing else in the package
imports it at import time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.shufflenet_v2 import STAGE_CHANNELS, STAGE_REPEATS  # torchvision's tables too
from ..utils.optional import import_torch

torch = import_torch(__name__)
nn = torch.nn

if TYPE_CHECKING:
    from ..models import ModelDescription

def stage_channels(width: float) -> tuple[int, int, int, int, int]:
    """torchvision's channels for a width multiplier; only its four published widths exist."""
    try:
        return STAGE_CHANNELS[float(width)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"width must be one of {sorted(STAGE_CHANNELS)} for torchvision's ShuffleNetV2, got {width!r}"
        ) from None


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's shuffle: view (b, g, c/g, h, w), swap axes 1 and 2, so the halves interleave."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous()
    return x.view(batch, channels, height, width)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    """A bias-free 3x3 depthwise conv padded 1, as both of torchvision's branches use."""
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class TorchvisionInvertedResidual(nn.Module):
    """torchvision's `InvertedResidual`: split (stride 1) or duplicate (stride 2), two branches, shuffle."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and inp != oup:
            raise ValueError(f"a stride-1 unit keeps its channels, got {inp} -> {oup}")
        self.stride = stride
        half = oup // 2
        if stride == 2:
            self.branch1 = nn.Sequential(
                _depthwise(inp, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, half, 1, 1, 0, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()  # kept (empty) so module names match torchvision's
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride == 2 else half, half, 1, 1, 0, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _depthwise(half, stride),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, 1, 0, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, processed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(processed)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return _channel_shuffle(out, 2)


class TorchvisionShuffleNetV2(nn.Module):
    """torchvision's ShuffleNetV2 topology; see `build_torchvision_shufflenet_v2`."""

    def __init__(self, width: float, num_classes: int = 1000) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.channels = stage_channels(width)
        stem, last = self.channels[0], self.channels[-1]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = stem
        for index, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, self.channels[1:4])):
            units = [TorchvisionInvertedResidual(in_ch, out_ch, 2)]
            units += [TorchvisionInvertedResidual(out_ch, out_ch, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{index + 2}", nn.Sequential(*units))
            in_ch = out_ch
        self.conv5 = nn.Sequential(
            nn.Conv2d(in_ch, last, 1, 1, 0, bias=False),
            nn.BatchNorm2d(last),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(self.conv5(x).mean([2, 3]))


def build_torchvision_shufflenet_v2(width: float, num_classes: int = 1000) -> nn.Module:
    """torchvision's ShuffleNetV2 as a `torch.nn.Module` with its exact `state_dict` names.

    Widths 0.5, 1.0, 1.5 and 2.0 (torchvision's `shufflenet_v2_x0_5` ... `x2_0`). The module
    is in training mode, as PyTorch's are: call `.eval()` before comparing outputs.
    """
    return TorchvisionShuffleNetV2(width, num_classes)


def build_reference(description: ModelDescription) -> nn.Module:
    """The torchvision network of a converted model's description (for output comparisons)."""
    from ..models import model_arch  # lazy: keeps this module importable on its own

    name = description.model
    if not name.startswith("shufflenet_v2_") or name.startswith("shufflenet_v2_plus"):
        raise ValueError(f"{name} is not a ShuffleNetV2 model (torchvision publishes no other)")
    return build_torchvision_shufflenet_v2(model_arch(name)["width"], description.num_classes)
