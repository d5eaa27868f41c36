"""timm's MobileNetV1 (`mobilenetv1_100`) rebuilt from PyTorch primitives, with timm's exact
`state_dict` names (`conv_stem`, `bn1`, `blocks.{s}.{i}.{conv_dw,bn1,conv_pw,bn2}`,
`classifier`), so a released file loads strictly: the reference of the converter's tests and
the PyTorch side of benchmarks, without installing timm.

timm's blocks are its `DepthwiseSeparableConv` with `pw_act=True` and no shortcut (its `dsa`
block type), ReLU6 after every BatchNorm (timm's BatchNormAct2d holds the plain BatchNorm
entries), 3x3 convolutions padded 1, global average pooling and a Linear classifier.
Importing this module needs PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.mobilenet_v1 import BLOCKS, block_channels  # timm's channels at every width here
from ..utils.optional import import_torch
from .mobilenet_v1_timm import STAGE_REPEATS

torch = import_torch(__name__)
nn = torch.nn

if TYPE_CHECKING:
    from ..models import ModelDescription


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
         groups: int = 1) -> nn.Conv2d:
    """timm's bias-free convolution, padded `kernel_size // 2` on every side."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                     bias=False)


class TimmDepthwiseSeparable(nn.Module):
    """timm's `dsa` block: depthwise 3x3, BN, ReLU6, pointwise 1x1, BN, ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = conv(in_channels, in_channels, 3, stride, groups=in_channels)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv_pw = conv(in_channels, out_channels, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.relu6(self.bn1(self.conv_dw(x)))
        return torch.nn.functional.relu6(self.bn2(self.conv_pw(x)))


class TimmMobileNetV1(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        stem, *outs = block_channels(width)
        self.conv_stem = conv(3, stem, 3, 2)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks, stages, in_ch = iter(zip(outs, (stride for _, stride in BLOCKS))), [], stem
        for repeats in STAGE_REPEATS:
            stage = []
            for out_ch, stride in (next(blocks) for _ in range(repeats)):
                stage.append(TimmDepthwiseSeparable(in_ch, out_ch, stride))
                in_ch = out_ch
            stages.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*stages)
        self.classifier = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.nn.functional.relu6(self.bn1(self.conv_stem(x))))
        return self.classifier(x.mean((2, 3)))


def build_reference(description: ModelDescription) -> nn.Module:
    """timm's network of a MobileNetV1 description, untrained, in training mode."""
    from ..models import model_arch  # lazy: keeps this module importable on its own

    if not description.model.startswith("mobilenet_v1_"):
        raise ValueError(f"{description.model} is not a MobileNetV1 model")
    return TimmMobileNetV1(model_arch(description.model)["width"], description.num_classes)
