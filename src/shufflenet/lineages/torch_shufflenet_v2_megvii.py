"""Megvii's ShuffleNetV2 and ShuffleNetV2+ (github.com/megvii-model/ShuffleNet-Series) in PyTorch.

References for the weight converter from Megvii's checkpoints, its tests and the PyTorch side of
benchmarks. Their `state_dict()` uses Megvii's exact names, so a released `.pth.tar` (after
stripping `module.`) loads strictly:

* V2: `first_conv.{0,1}.*`, `features.{i}.branch_main.{0,1,3,4,5,6}.*`,
  `features.{i}.branch_proj.{0,1,2,3}.*` (stride-2 units only), `conv_last.{0,1}.*`,
  `classifier.0.weight`.
* V2+: the same (no `maxpool`), 15-module `branch_main` in Xception units, SE layers as
  `features.{i}.branch_main.{8 or 15}.SE_opr.{1,2,4}.*` (Shufflenet or Xception units of stages
  3 and 4), then `LastSE.SE_opr.{1,2,4}.*` and `fc.0.weight`.

What the converter must bridge: a stride-2 unit's projection branch keeps all `inp` channels and
its main branch gives `oup - inp` (torchvision gives `oup / 2` each); a stride-1 unit splits its
input into even and odd channels (the shuffle happens there, not at the previous unit's output);
the classifier has no bias; inputs are BGR in 0..255 without normalisation. V2+ has no max pool
after its stem, uses hard-swish `x * clamp(x + 3, 0, 6) / 6` from its second stage on, SE layers
(gated by the same hard-sigmoid) from its third, an SE on the pooled 1280 features (`LastSE`)
and a bias-free 1280-wide `fc` before the classifier.

The global pool is `AdaptiveAvgPool2d(1)`, which equals Megvii's `AvgPool2d(7)` at 224x224 and
also works at other input sizes. Dropout (p=0.2) sits before the classifier in V2 2.0x and every
V2+, as in Megvii's code; it has no weights and does nothing in eval mode.

Importing this module needs PyTorch (`pip install -e ".[torch]"`); nothing else in the package
imports it at import time.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..models.shufflenet_v2 import STAGE_CHANNELS as V2_STAGE_CHANNELS
from ..models.shufflenet_v2 import STAGE_REPEATS as V2_STAGE_REPEATS
from ..models.shufflenet_v2_plus import ARCHITECTURE as PLUS_ARCHITECTURE
from ..models.shufflenet_v2_plus import STAGE_CHANNELS as V2_PLUS_STAGE_CHANNELS
from ..models.shufflenet_v2_plus import STAGE_REPEATS as V2_PLUS_STAGE_REPEATS
from ..utils.optional import import_torch

torch = import_torch(__name__)
nn = torch.nn

if TYPE_CHECKING:
    from ..models import ModelDescription

# Megvii's encoding of a searched unit: 0/1/2 = Shufflenet unit with a 3/5/7 depthwise kernel,
# 3 = Xception unit. Its train.py fixes one architecture for all three sizes; the tables (and that
# architecture, `shufflenet_v2_plus.ARCHITECTURE`) are the registry's, checked against Megvii's code.
_MEGVII_CHOICE = {3: 0, 5: 1, 7: 2, "x": 3}
V2_PLUS_ARCHITECTURE = tuple(_MEGVII_CHOICE[choice] for choice in PLUS_ARCHITECTURE)


def _split_even_odd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Megvii's `channel_shuffle`: channels 0, 2, 4, ... pass through, 1, 3, 5, ... are processed."""
    batch, channels, height, width = x.shape
    pairs = x.reshape(batch, channels // 2, 2, height, width)
    return pairs[:, :, 0], pairs[:, :, 1]


class HardSwish(nn.Module):
    """Megvii's `HS`, written as they do (`nn.Hardswish` may round differently)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.clamp(x + 3, 0, 6) / 6)


def _activation(name: str) -> nn.Module:
    """`ReLU` (V2, V2+ first stage) or `HS` (later V2+ stages), the only two Megvii uses."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return HardSwish()
    raise ValueError(f"activation must be 'relu' or 'hswish', got {name!r}")


class MegviiSELayer(nn.Module):
    """Megvii's `SELayer` on (N, C, H, W): pool, 1x1 conv to C/4, BN, ReLU, 1x1 conv, hard-sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = channels // 4
        self.SE_opr = nn.Sequential(  # Megvii's state_dict name
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeezed, 1, 1, bias=False),
            nn.BatchNorm2d(squeezed),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, channels, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.clamp(self.SE_opr(x) + 3, 0, 6) / 6)


def _conv_bn(inp: int, out: int, kernel: int, stride: int, depthwise: bool) -> list[nn.Module]:
    """A bias-free conv ("same" padding for odd kernels) and its BatchNorm, as two modules."""
    groups = inp if depthwise else 1
    return [nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out)]


def _projection(inp: int, kernel: int, stride: int, activation: str) -> nn.Sequential:
    """The stride-2 shortcut `branch_proj`: dw conv, BN, pw conv (keeping `inp` channels), BN, act."""
    return nn.Sequential(*_conv_bn(inp, inp, kernel, stride, True),
                         *_conv_bn(inp, inp, 1, 1, False), _activation(activation))


class MegviiUnit(nn.Module):
    """What Megvii's units share: the split (stride 1) or duplicated (stride 2) input and concat.

    Stride 1: even channels pass, odd ones go through `branch_main`. Stride 2: the whole input
    goes through both `branch_proj` (`inp` channels out) and `branch_main` (`oup - inp` out).
    """

    def __init__(self, stride: int, activation: str, use_se: bool) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if use_se and activation == "relu":
            raise ValueError("Megvii's units with an SE layer use hard-swish, not ReLU")
        self.stride = stride
        self.branch_main = nn.Sequential()
        self.branch_proj: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, processed = _split_even_odd(x)
            return torch.cat((kept, self.branch_main(processed)), 1)
        return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)


class MegviiShuffleBlock(MegviiUnit):
    """Megvii's `ShuffleV2Block` (V2) and `Shufflenet` (V2+) unit.

    `branch_main` is pw conv, BN, act, kxk dw conv, BN, pw conv, BN, act, then an SE if asked;
    `branch_proj` (stride 2) is kxk dw conv, BN, pw conv, BN, act.
    """

    def __init__(self, inp: int, oup: int, kernel: int, stride: int, activation: str = "relu",
                 use_se: bool = False) -> None:
        super().__init__(stride, activation, use_se)
        if kernel not in (3, 5, 7):
            raise ValueError(f"kernel must be 3, 5 or 7, got {kernel}")
        mid, outputs = oup // 2, oup - inp
        layers = [*_conv_bn(inp, mid, 1, 1, False), _activation(activation),
                  *_conv_bn(mid, mid, kernel, stride, True),
                  *_conv_bn(mid, outputs, 1, 1, False), _activation(activation)]
        if use_se:
            layers.append(MegviiSELayer(outputs))
        self.branch_main = nn.Sequential(*layers)
        if stride == 2:
            self.branch_proj = _projection(inp, kernel, stride, activation)


class MegviiShuffleXception(MegviiUnit):
    """Megvii's `Shuffle_Xception` (V2+): three (3x3 dw conv, BN, pw conv, BN, act) in `branch_main`.

    As in Megvii's code every depthwise conv of `branch_main` takes the unit's stride, so a
    stride-2 Xception unit could not concatenate its branches; the published architecture only
    places Xception units at stride 1.
    """

    def __init__(self, inp: int, oup: int, stride: int, activation: str = "hswish",
                 use_se: bool = False) -> None:
        super().__init__(stride, activation, use_se)
        mid, outputs = oup // 2, oup - inp
        layers: list[nn.Module] = []
        for dw_in, pw_out in ((inp, mid), (mid, mid), (mid, outputs)):
            layers += [*_conv_bn(dw_in, dw_in, 3, stride, True), *_conv_bn(dw_in, pw_out, 1, 1, False),
                       _activation(activation)]
        if use_se:
            layers.append(MegviiSELayer(outputs))
        self.branch_main = nn.Sequential(*layers)
        if stride == 2:
            self.branch_proj = _projection(inp, 3, stride, activation)


def v2_stage_channels(width: float) -> tuple[int, int, int, int, int]:
    """Megvii's V2 channels for a width multiplier; only its four released widths exist."""
    try:
        return V2_STAGE_CHANNELS[float(width)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"width must be one of {sorted(V2_STAGE_CHANNELS)} for Megvii's ShuffleNetV2, got {width!r}"
        ) from None


def v2_plus_stage_channels(size: str) -> tuple[int, int, int, int, int, int]:
    """Megvii's V2+ channels for a size ('small', 'medium' or 'large', any case)."""
    channels = V2_PLUS_STAGE_CHANNELS.get(str(size).lower())
    if channels is None:
        raise ValueError(
            f"size must be one of {sorted(V2_PLUS_STAGE_CHANNELS)} for Megvii's ShuffleNetV2+, got {size!r}"
        )
    return channels


class MegviiShuffleNetV2(nn.Module):
    """Megvii's ShuffleNetV2 topology; see `build_megvii_shufflenet_v2`."""

    def __init__(self, width: float, num_classes: int = 1000) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.channels = v2_stage_channels(width)
        stem, last = self.channels[0], self.channels[-1]
        self.first_conv = nn.Sequential(*_conv_bn(3, stem, 3, 2, False), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        units, in_ch = [], stem
        for repeats, out_ch in zip(V2_STAGE_REPEATS, self.channels[1:4]):
            units.append(MegviiShuffleBlock(in_ch, out_ch, 3, 2))
            units += [MegviiShuffleBlock(out_ch // 2, out_ch, 3, 1) for _ in range(repeats - 1)]
            in_ch = out_ch
        self.features = nn.Sequential(*units)
        self.conv_last = nn.Sequential(*_conv_bn(in_ch, last, 1, 1, False), nn.ReLU(inplace=True))
        self.globalpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2) if float(width) == 2.0 else None
        self.classifier = nn.Sequential(nn.Linear(last, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_last(self.features(self.maxpool(self.first_conv(x))))
        x = self.globalpool(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.classifier(torch.flatten(x, 1))


class MegviiShuffleNetV2Plus(nn.Module):
    """Megvii's ShuffleNetV2+ topology; see `build_megvii_shufflenet_v2_plus`."""

    def __init__(self, size: str, num_classes: int = 1000,
                 architecture: Sequence[int] = V2_PLUS_ARCHITECTURE) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if len(architecture) != sum(V2_PLUS_STAGE_REPEATS) or not set(architecture) <= {0, 1, 2, 3}:
            raise ValueError(f"architecture must be {sum(V2_PLUS_STAGE_REPEATS)} choices in 0..3, "
                             f"got {list(architecture)}")
        self.channels = v2_plus_stage_channels(size)
        stem, last = self.channels[0], self.channels[-1]
        self.first_conv = nn.Sequential(*_conv_bn(3, stem, 3, 2, False), HardSwish())
        self.features = nn.Sequential(*self._units(architecture))
        self.conv_last = nn.Sequential(*_conv_bn(self.channels[-2], last, 1, 1, False), HardSwish())
        self.globalpool = nn.AdaptiveAvgPool2d(1)
        self.LastSE = MegviiSELayer(last)  # Megvii's state_dict name
        self.fc = nn.Sequential(nn.Linear(last, last, bias=False), HardSwish())
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes, bias=False))

    def _units(self, architecture: Sequence[int]) -> list[nn.Module]:
        """The 20 units: ReLU in stage 1, hard-swish after; SE layers in stages 3 and 4."""
        units: list[nn.Module] = []
        choices, in_ch = iter(architecture), self.channels[0]
        for stage, (repeats, out_ch) in enumerate(zip(V2_PLUS_STAGE_REPEATS, self.channels[1:5])):
            act, use_se = ("relu" if stage == 0 else "hswish"), stage >= 2
            for i in range(repeats):
                inp, stride = (in_ch, 2) if i == 0 else (out_ch // 2, 1)
                choice = next(choices)
                if choice == 3:
                    units.append(MegviiShuffleXception(inp, out_ch, stride, act, use_se))
                else:
                    units.append(MegviiShuffleBlock(inp, out_ch, 3 + 2 * choice, stride, act, use_se))
            in_ch = out_ch
        return units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_last(self.features(self.first_conv(x)))
        x = torch.flatten(self.LastSE(self.globalpool(x)), 1)
        return self.classifier(self.dropout(self.fc(x)))


def build_megvii_shufflenet_v2(width: float, num_classes: int = 1000) -> nn.Module:
    """Megvii's ShuffleNetV2 as a `torch.nn.Module` with its exact `state_dict` names.

    Widths 0.5, 1.0, 1.5 and 2.0 (Megvii's '0.5x' ... '2.0x'). The module is in training
    mode, as PyTorch's are: call `.eval()` before comparing outputs.
    """
    return MegviiShuffleNetV2(width, num_classes)


def build_megvii_shufflenet_v2_plus(size: str, num_classes: int = 1000) -> nn.Module:
    """Megvii's ShuffleNetV2+ ('small', 'medium' or 'large') with its exact `state_dict` names.

    All three sizes use the architecture fixed in Megvii's train.py (`V2_PLUS_ARCHITECTURE`).
    The module is in training mode: call `.eval()` before comparing outputs (its `LastSE`
    BatchNorm sees one value per channel per image, so training mode needs a batch above 1).
    """
    return MegviiShuffleNetV2Plus(size, num_classes)


def build_reference(description: ModelDescription) -> nn.Module:
    """The Megvii network of a converted model's description (for output comparisons)."""
    from ..models import model_arch  # lazy: keeps this module importable on its own

    name = description.model
    if name.startswith("shufflenet_v2_plus"):
        return build_megvii_shufflenet_v2_plus(model_arch(name)["size"], description.num_classes)
    if name.startswith("shufflenet_v2_"):
        return build_megvii_shufflenet_v2(model_arch(name)["width"], description.num_classes)
    raise ValueError(f"{name} is neither a ShuffleNetV2 nor a ShuffleNetV2+ model")


def megvii_checkpoint(model: nn.Module) -> dict:
    """Wrap a model's weights as Megvii's released files are: `{'state_dict': {'module.…': …}}`."""
    return {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
