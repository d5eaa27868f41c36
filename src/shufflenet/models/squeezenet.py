"""SqueezeNet: Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size", 2016, https://arxiv.org/abs/1602.07360; version 1.1 from the authors' repo.

A convolution with ReLU, then Fire modules (a 1x1 "squeeze" convolution, then 1x1 and 3x3
"expand" convolutions concatenated, each followed by ReLU) between 3x3/s2 max pools, and a
classifier of Dropout 0.5, a 1x1 convolution to the classes, ReLU and global average pooling.
Every convolution has a bias; there is no BatchNorm.

Parameter names are torchvision's and mindcv's (`features.{i}` with Fire modules' `squeeze`,
`expand1x1`, `expand3x3`, and `classifier.1`).

torchvision's pools round up (`ceil_mode=True`), which MindSpore's pools do not offer on every
backend. A ceil-mode 3x3/s2 pool with no padding equals a floor-mode pool over the input padded
by one row and column at the bottom and right: ceil((h - 3) / 2) = floor((h - 2) / 2) for every
integer h, and the padded zeros never win because every window holds a real value and every pool
here follows a ReLU (values >= 0). mindcv floors instead (`pool_rounding="floor"`): 13x13 final
maps become 12x12 at 224 px, and its 1.1 pads the stem convolution by 1.
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Constant, HeUniform

from .features import FeatureSpec, FeatureTap
from .layers import IN_CHANNELS_OPTION, check_positive_ints, fill
from .registry import ModelOption, find_model, model_arch, register_family, register_model

FAMILY = "squeezenet"
POOL_ROUNDINGS = ("ceil", "floor")
#: version -> (stem (channels, kernel), the features after the stem's ReLU: "M" a max pool,
#: (squeeze, expand) a Fire module whose 1x1 and 3x3 expansions each make `expand` channels).
ARCHITECTURES = {
    "1_0": ((96, 7), ("M", (16, 64), (16, 64), (32, 128), "M", (32, 128), (48, 192), (48, 192), (64, 256),
                      "M", (64, 256))),
    "1_1": ((64, 3), ("M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192),
                      (64, 256), (64, 256))),
}
#: Multiply-adds at 224x224 in millions: torchvision's documented GFLOPS (0.82 / 0.35).
PUBLISHED_MFLOPS = {"1_0": 820, "1_1": 350}
OPTIONS = {
    "pool_rounding": ModelOption(str, "max pools' output size rounded up as torchvision "
                                 "(ceil_mode=True) or down as mindcv", POOL_ROUNDINGS),
    "stem_padding": ModelOption(int, "padding of the stem convolution: 0 (torchvision) or 1 "
                                "(mindcv's 1.1)"),
    "in_channels": IN_CHANNELS_OPTION,
}


def feature_taps(arch: dict) -> tuple[FeatureTap, ...]:
    """As a backbone (no timm model to follow): the stem's ReLU (r2) and the last Fire module
    before each max pool and at the end (r4, 8, 16); SqueezeNet stops at r16 (three pools), so
    it has four tap points, not five. Read from `ARCHITECTURES` (`features.0` is the stem)."""
    (stem, _), layout = ARCHITECTURES[arch["version"]]
    taps, channels, reduction = [FeatureTap("features.1", stem, 2)], stem, 2
    for k, item in enumerate(layout):
        if item == "M":
            reduction *= 2
            continue
        channels = 2 * item[1]
        if k + 1 == len(layout) or layout[k + 1] == "M":
            taps.append(FeatureTap(f"features.{k + 2}", channels, reduction))
    return tuple(taps)


class Fire(nn.Cell):
    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1, has_bias=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1, has_bias=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, pad_mode="pad", padding=1, has_bias=True)
        self.relu = nn.ReLU()

    def construct(self, x: Tensor) -> Tensor:
        x = self.relu(self.squeeze(x))
        return ops.concat((self.relu(self.expand1x1(x)), self.relu(self.expand3x3(x))), 1)


class CeilMaxPool(nn.Cell):
    """3x3/s2 max pool with torchvision's `ceil_mode=True` on non-negative inputs (see module).

    The zero row and column are concatenated, not padded: MindSpore's padding primitive (PadV3)
    has no ONNX export and breaks dynamic-batch MINDIR (see `shufflenet.export.portable_pools`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, pad_mode="valid")

    def construct(self, x: Tensor) -> Tensor:
        x = ops.concat((x, ops.zeros_like(x[:, :, :, :1])), 3)
        return self.pool(ops.concat((x, ops.zeros_like(x[:, :, :1])), 2))


class SqueezeNet(nn.Cell):
    """SqueezeNet 1.0 or 1.1 for inputs from 32x32 up (global average pooling).

    Args:
        version: "1_0" or "1_1".
        num_classes: outputs of the classifier convolution.
        dropout: dropout before it while training.
        pool_rounding: "ceil" (torchvision) or "floor" (mindcv).
        stem_padding: padding of the stem convolution (mindcv's 1.1: 1).
        in_channels: input image channels.
    """

    def __init__(self, version: str = "1_1", num_classes: int = 1000, dropout: float = 0.5,
                 pool_rounding: str = "ceil", stem_padding: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        if pool_rounding not in POOL_ROUNDINGS:
            raise ValueError(f"pool_rounding must be one of {POOL_ROUNDINGS}, got {pool_rounding!r}")
        if stem_padding not in (0, 1):
            raise ValueError(f"stem_padding must be 0 or 1, got {stem_padding!r}")
        self.version, self.pool_rounding, self.stem_padding = version, pool_rounding, stem_padding
        (stem, kernel), layout = ARCHITECTURES[version]
        layers, channels = [nn.Conv2d(in_channels, stem, kernel, 2, pad_mode="pad", padding=stem_padding,
                                      has_bias=True), nn.ReLU()], stem
        for item in layout:
            if item == "M":
                layers.append(CeilMaxPool() if pool_rounding == "ceil" else nn.MaxPool2d(3, 2))
            else:
                layers.append(Fire(channels, *item))
                channels = 2 * item[1]
        self.features = nn.SequentialCell(layers)
        self.num_features, self.dropout = channels, dropout
        self.classifier = self._classifier(num_classes)
        for _, cell in self.features.cells_and_names():
            if isinstance(cell, nn.Conv2d):  # torchvision's kaiming_uniform_, zero biases
                fill(cell.weight, HeUniform(negative_slope=0))
                fill(cell.bias, Constant(0.0))

    def _classifier(self, num_classes: int) -> nn.SequentialCell:
        """Dropout, the 1x1 class convolution (N(0, 0.01), as torchvision's), ReLU."""
        check_positive_ints(num_classes=num_classes)
        conv = nn.Conv2d(self.num_features, num_classes, 1, has_bias=True, weight_init="normal",
                         bias_init="zeros")
        return nn.SequentialCell([nn.Dropout(p=self.dropout), conv, nn.ReLU()])

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, e.g. to fine-tune on a new label set."""
        self.classifier = self._classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The classes are a convolution before the pool: `pre_logits` gives the pooled features."""
        if pre_logits:
            return ops.mean(x, (2, 3))
        return ops.mean(self.classifier(x), (2, 3))

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def recognise_checkpoint(shapes: dict[str, tuple]) -> tuple[str, dict] | None:
    """Model, classes and options of a checkpoint with our (torchvision's, mindcv's) names.

    The stem's shape tells the version. A file with these names and no stored description is a
    MindSpore checkpoint, so mindcv's (torchvision's come as PyTorch files through `shufflenet
    convert`, which records torchvision's options): floor pools, and 1.1's stem padded by 1.
    """
    if any(key not in shapes for key in ("features.0.weight", "features.3.squeeze.weight",
                                         "classifier.1.weight")):
        return None
    stem = tuple(shapes["features.0.weight"])
    name = find_model(FAMILY, lambda arch: ARCHITECTURES[arch["version"]][0] == (stem[0], stem[-1]),
                      f"a SqueezeNet stem of shape {stem}")
    options = {"pool_rounding": "floor", "stem_padding": 1 if model_arch(name)["version"] == "1_1" else 0}
    return name, {"num_classes": int(shapes["classifier.1.weight"][0]), "options": options}


def arch_text(net: SqueezeNet) -> str:
    return f"version {net.version.replace('_', '.')}, {net.pool_rounding} pools"


register_family(FAMILY, OPTIONS, recognise_checkpoint, arch_text,
                features=FeatureSpec(("features.*",), feature_taps, ("dropout",)))
for _version, _mflops in PUBLISHED_MFLOPS.items():
    register_model(f"squeezenet{_version}", SqueezeNet, FAMILY, published_mflops=(_mflops, "torchvision"),
                   version=_version)
