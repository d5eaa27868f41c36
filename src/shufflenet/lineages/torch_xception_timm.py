"""Cadene's and timm's Xception (`pretrainedmodels.xception`, `timm.create_model("legacy_xception")`)
rebuilt from PyTorch primitives, with their exact `state_dict` names, so the released
`xception-43020ad28.pth` loads strictly: the reference of the converter's tests and the PyTorch
side of benchmarks, without installing either.

A block's first ReLU is not in place (Cadene replaces `rep[0]` with `ReLU(inplace=False)`), so
its shortcut adds the block's input before that ReLU; pools are `MaxPool2d(3, stride, 1)`; the
stem's convolutions are unpadded; BatchNorm after every separable convolution (none between its
depthwise and pointwise parts). Importing this module needs PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.xception import BLOCKS  # Cadene's block arguments
from ..utils.optional import import_torch

torch = import_torch(__name__)
nn = torch.nn

if TYPE_CHECKING:
    from ..models import ModelDescription


class CadeneSeparableConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class CadeneBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int, start_with_relu: bool,
                 grow_first: bool) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels if grow_first else in_channels] * (reps - 1) + [out_channels]
        rep = []
        for k in range(reps):
            rep += [nn.ReLU(inplace=k > 0), CadeneSeparableConv(widths[k], widths[k + 1]),
                    nn.BatchNorm2d(widths[k + 1])]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)
        if in_channels != out_channels or stride != 1:
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_channels)
        else:
            self.skip = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.skipbn(self.skip(x)) if self.skip is not None else x
        return self.rep(x) + shortcut


class CadeneXception(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        for index, args in enumerate(BLOCKS, 1):
            setattr(self, f"block{index}", CadeneBlock(*args))
        self.conv3 = CadeneSeparableConv(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = CadeneSeparableConv(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        for index in range(1, len(BLOCKS) + 1):
            x = getattr(self, f"block{index}")(x)
        x = torch.relu(self.bn4(self.conv4(torch.relu(self.bn3(self.conv3(x))))))
        return self.fc(x.mean((2, 3)))


def build_reference(description: ModelDescription) -> nn.Module:
    """Cadene's/timm's network of an Xception description, untrained, in training mode."""
    if description.model != "xception":
        raise ValueError(f"{description.model} is not the Xception model")
    return CadeneXception(description.num_classes)
