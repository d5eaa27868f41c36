"""torchvision's SqueezeNet 1.0/1.1 rebuilt from PyTorch primitives, with torchvision's exact
`state_dict` names (`features.{i}.{squeeze,expand1x1,expand3x3}`, `classifier.1`), so a released
`.pth` loads strictly: the reference of the converter's tests and the PyTorch side of
benchmarks, without torchvision (its wheel here is a CUDA build that does not import).

torchvision's pools are `MaxPool2d(3, 2, ceil_mode=True)`; the classifier is Dropout 0.5, the
1x1 class convolution, ReLU and `AdaptiveAvgPool2d(1)`. Importing this module needs PyTorch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.squeezenet import ARCHITECTURES  # torchvision's layouts
from ..utils.optional import import_torch

torch = import_torch(__name__)
nn = torch.nn

if TYPE_CHECKING:
    from ..models import ModelDescription


class TorchvisionFire(nn.Module):
    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat((torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))), 1)


class TorchvisionSqueezeNet(nn.Module):
    def __init__(self, version: str = "1_0", num_classes: int = 1000) -> None:
        super().__init__()
        (stem, kernel), layout = ARCHITECTURES[version]
        layers, channels = [nn.Conv2d(3, stem, kernel, 2), nn.ReLU(inplace=True)], stem
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                layers.append(TorchvisionFire(channels, *item))
                channels = 2 * item[1]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(channels, num_classes, 1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def build_reference(description: ModelDescription) -> nn.Module:
    """torchvision's network of a SqueezeNet description, untrained, in training mode."""
    from ..models import model_arch  # lazy: keeps this module importable on its own

    if not description.model.startswith("squeezenet"):
        raise ValueError(f"{description.model} is not a SqueezeNet model")
    return TorchvisionSqueezeNet(model_arch(description.model)["version"], description.num_classes)
