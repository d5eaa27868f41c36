"""torchvision's MobileNetV2 (`torchvision.models.mobilenet_v2`) rebuilt from PyTorch primitives,
with torchvision's exact `state_dict` names (`features.0.{0,1}`, `features.{1..17}.conv.*`,
`features.18.{0,1}`, `classifier.1`), so a released `.pth` loads strictly: the reference of the
converter's tests and the PyTorch side of benchmarks, without torchvision (whose wheel is a CUDA
build that does not import with the CPU PyTorch).

torchvision's `Conv2dNormActivation` is a (conv, BN, ReLU6) `Sequential`; an
`InvertedResidual` keeps its layers in `conv` (expansion, depthwise, then the projection conv
and BN as plain entries) and adds its input when stride and channels allow; the head is a global
average pool, Dropout 0.2 and a Linear classifier. Importing this module needs PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.mobilenet_v2 import STAGES, stage_channels  # torchvision's tables too
from ..utils.optional import import_torch

torch = import_torch(__name__)
nn = torch.nn

if TYPE_CHECKING:
    from ..models import ModelDescription


def conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                  groups: int = 1) -> nn.Sequential:
    """torchvision's `Conv2dNormActivation` with ReLU6."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU6(inplace=True))


class TorchvisionInvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        layers = [] if expansion == 1 else [conv_bn_relu6(in_channels, hidden)]
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TorchvisionMobileNetV2(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        stem, *stage_outs, last = stage_channels(width)
        layers, in_ch = [conv_bn_relu6(3, stem, 3, 2)], stem
        for (expansion, _, repeats, stride), out_ch in zip(STAGES, stage_outs):
            for i in range(repeats):
                layers.append(TorchvisionInvertedResidual(in_ch, out_ch, stride if i == 0 else 1, expansion))
                in_ch = out_ch
        layers.append(conv_bn_relu6(in_ch, last))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def build_reference(description: ModelDescription) -> nn.Module:
    """torchvision's network of a MobileNetV2 description, untrained, in training mode."""
    from ..models import model_arch  # lazy: keeps this module importable on its own

    if not description.model.startswith("mobilenet_v2_"):
        raise ValueError(f"{description.model} is not a MobileNetV2 model")
    return TorchvisionMobileNetV2(model_arch(description.model)["width"], description.num_classes)
