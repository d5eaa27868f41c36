"""torchvision's MobileNetV2 (`torchvision.models.mobilenet_v2`, PyTorch) -> ours.

torchvision's network is ours (and mindcv's) under other names: its `Conv2dNormActivation`
cells are (conv, BN, ReLU6) sequences of their own, so `features.0.0/0.1` is our stem
`features.0/1`, block `features.{i}.conv.{j}` is our `features.{i + 2}.layers.{k}` with each
(conv, BN, ReLU6) sequence laid flat (`conv.1.0` -> `layers.3`, the projection `conv.2`/`conv.3`
-> `layers.6/7`; the first block, without expansion, has one such sequence), the last
convolution `features.18.0/18.1` is `features.20/21`, and `classifier.1` keeps its name.
Inputs are ImageNet-normalised RGB. Files are bare state dicts (`.pth`).
"""
from __future__ import annotations

import re

from ..models import ModelDescription
from ..models.mobilenet_v2 import FIRST_BLOCK, STAGES
from .common import Lineage, StateDict, convert_renamed, torch_entry_names

PREPROCESSING = "imagenet"
SIGNATURE = ("features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
             "classifier.1.weight")
#: Expansion of each of the seventeen blocks.
EXPANSIONS = tuple(t for t, _, n, _ in STAGES for _ in range(n))
_BLOCK_LAYER = re.compile(r"features\.(\d+)\.conv\.(\d+)(?:\.(\d+))?")
_LAST_CONV = FIRST_BLOCK + len(EXPANSIONS)  # ours; torchvision's is features.18
#: torchvision's modules outside the blocks -> ours.
_OUTER = {"features.0.0": "features.0", "features.0.1": "features.1",
          f"features.{len(EXPANSIONS) + 1}.0": f"features.{_LAST_CONV}",
          f"features.{len(EXPANSIONS) + 1}.1": f"features.{_LAST_CONV + 1}", "classifier.1": "classifier.1"}


def flat_layer(block: int, layer: int, sub: str | None) -> int | None:
    """Our `layers` index of torchvision's `conv.{layer}[.{sub}]` in block `block`."""
    sequences = 1 if EXPANSIONS[block] == 1 else 2  # (conv, BN, ReLU6) cells before the projection
    if layer < sequences:
        return 3 * layer + int(sub) if sub is not None else None
    return 3 * sequences + layer - sequences if sub is None else None


def module_name(path: str) -> str | None:
    """Our module of a torchvision module path (`features.2.conv.1.0` -> `features.4.layers.3`)."""
    if path in _OUTER:
        return _OUTER[path]
    layer = _BLOCK_LAYER.fullmatch(path)
    if layer is None or not 1 <= int(layer[1]) <= len(EXPANSIONS):
        return None
    block = int(layer[1]) - 1
    flat = flat_layer(block, int(layer[2]), layer[3])
    return None if flat is None else f"features.{FIRST_BLOCK + block}.layers.{flat}"


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """torchvision's state dict renamed; the width comes from the renamed shapes."""
    return convert_renamed(state, torch_entry_names(state, module_name), source, options, {},
                           PREPROCESSING, "torchvision's MobileNetV2")


LINEAGE = Lineage("mobilenet_v2", "torchvision", SIGNATURE, convert,
                  torch_reference="shufflenet.lineages.torch_mobilenet_v2_torchvision:build_reference")
