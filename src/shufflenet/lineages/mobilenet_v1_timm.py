"""timm's MobileNetV1 (`timm.create_model("mobilenetv1_100")`, PyTorch) -> ours.

timm builds the classic network from its EfficientNet blocks: `conv_stem` + `bn1`, five stages
of depthwise-separable blocks `blocks.{s}.{i}` (1, 2, 2, 6 and 2 of them; `conv_dw`, `bn1`,
`conv_pw`, `bn2`, no shortcut) and `classifier` with a bias, with ReLU6 after every BatchNorm
and ImageNet-normalised RGB input. Our network with `activation="relu6"` is that one, so
converting is a renaming: the stem to `features.0/1`, block `blocks.{s}.{i}` to
`features.{3 + its index among the thirteen}` with `conv_dw`/`bn1`/`conv_pw`/`bn2` at 0/1/3/4.
timm's other MobileNetV1s (`mobilenetv1_100h` with a head convolution, `mobilenetv1_125`) are
refused by name and width. Files are bare state dicts (`.pth`, `pytorch_model.bin`).
"""
from __future__ import annotations

import re

from ..models import ModelDescription
from ..models.mobilenet_v1 import FIRST_BLOCK
from .common import Lineage, StateDict, convert_renamed, torch_entry_names

#: Options of our network that reproduce timm's.
OPTIONS = {"activation": "relu6"}
PREPROCESSING = "timm_mobilenet_v1"
SIGNATURE = ("conv_stem.weight", "bn1.running_mean", "blocks.0.0.conv_dw.weight", "blocks.0.0.conv_pw.weight",
             "classifier.weight")
#: timm's MobileNetV2 and others with a head convolution share the stem and first block's names.
ABSENT = ("conv_head.weight", "blocks.1.0.conv_pwl.weight")
#: Blocks per timm stage (its arch_def `dsa_r1`, `dsa_r2`, `dsa_r2`, `dsa_r6`, `dsa_r2`).
STAGE_REPEATS = (1, 2, 2, 6, 2)
_STEM = {"conv_stem": "features.0", "bn1": "features.1", "classifier": "classifier"}
_LAYERS = {"conv_dw": 0, "bn1": 1, "conv_pw": 3, "bn2": 4}
_BLOCK_LAYER = re.compile(r"blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)")


def module_name(path: str) -> str | None:
    """Our module of a timm module path (`blocks.3.2.conv_pw` -> `features.10.3`), or None."""
    if path in _STEM:
        return _STEM[path]
    layer = _BLOCK_LAYER.fullmatch(path)
    if layer is None:
        return None
    stage, index = int(layer[1]), int(layer[2])
    if stage >= len(STAGE_REPEATS) or index >= STAGE_REPEATS[stage]:
        return None
    return f"features.{FIRST_BLOCK + sum(STAGE_REPEATS[:stage]) + index}.{_LAYERS[layer[3]]}"


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """timm's state dict renamed; the width comes from the renamed shapes."""
    return convert_renamed(state, torch_entry_names(state, module_name), source, options, OPTIONS,
                           PREPROCESSING, "timm's MobileNetV1")


LINEAGE = Lineage("mobilenet_v1", "timm", SIGNATURE, convert, absent=ABSENT,
                  torch_reference="shufflenet.lineages.torch_mobilenet_v1_timm:build_reference")
