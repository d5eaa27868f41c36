"""torchvision's ShuffleNetV2 (`torchvision.models.shufflenet_v2_x0_5` ... `x2_0`, PyTorch) -> ours.

torchvision builds ShuffleNetV2 its own way: a stride-2 unit's two branches each make half the
output channels, a stride-1 unit passes the first half of its input on and processes the second
(`chunk`), and the shuffle interleaves the two halves at the unit's output; the max pool pads
symmetrically, the classifier has a bias and inputs are RGB normalised with the ImageNet mean
and std. Our `unit_layout="torchvision"` is that network, so converting is a renaming:
`conv1` -> `first_conv`, the units `stage2.{i}`, `stage3.{i}`, `stage4.{i}` -> `features.{i}`,
`features.{4 + i}`, `features.{12 + i}`, `branch1` -> `branch_proj` and `branch2` ->
`branch_main` (same layer indices), `conv5` -> `conv_last`, `fc` -> `classifier`, BatchNorm
fields to MindSpore's. Files are bare state dicts (`.pth`), read with `weights_only=True`.
"""
from __future__ import annotations

import re

from ..models import ModelDescription
from ..models.shufflenet_v2 import STAGE_REPEATS
from .common import Lineage, StateDict, convert_renamed, torch_entry_names

#: Options of our network that reproduce torchvision's.
OPTIONS = {"unit_layout": "torchvision", "pool_padding": "symmetric", "classifier_bias": True}
PREPROCESSING = "imagenet"
SIGNATURE = ("conv1.0.weight", "stage2.0.branch1.0.weight", "stage2.0.branch2.0.weight", "conv5.0.weight",
             "fc.weight")
#: torchvision's modules outside the stages -> ours.
_MODULES = {"conv1": "first_conv", "conv5": "conv_last", "fc": "classifier"}
_BRANCHES = {"branch1": "branch_proj", "branch2": "branch_main"}
#: torchvision's stage -> (index of its first unit in our `features`, its number of units).
STAGES = {f"stage{k + 2}": (sum(STAGE_REPEATS[:k]), repeats) for k, repeats in enumerate(STAGE_REPEATS)}
_UNIT_LAYER = re.compile(r"(stage\d)\.(\d+)\.(branch[12])\.(\d+)")


def module_name(path: str) -> str | None:
    """Our module of a torchvision module path (`stage3.1.branch2.4` -> `features.5.branch_main.4`),
    or None if ours has no such module."""
    head, _, rest = path.partition(".")
    if head in _MODULES:
        return f"{_MODULES[head]}.{rest}" if rest else _MODULES[head]
    layer = _UNIT_LAYER.fullmatch(path)
    if layer is None or layer[1] not in STAGES:
        return None
    first, repeats = STAGES[layer[1]]
    unit = int(layer[2])
    return f"features.{first + unit}.{_BRANCHES[layer[3]]}.{layer[4]}" if unit < repeats else None


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """torchvision's state dict renamed; the width comes from the renamed stage shapes."""
    return convert_renamed(state, torch_entry_names(state, module_name), source, options, OPTIONS,
                           PREPROCESSING, "torchvision's ShuffleNetV2")


LINEAGE = Lineage("shufflenet_v2", "torchvision", SIGNATURE, convert,
                  torch_reference="shufflenet.lineages.torch_shufflenet_v2_torchvision:build_reference")
