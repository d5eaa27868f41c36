"""Megvii's ShuffleNetV1 (github.com/megvii-model/ShuffleNet-Series, PyTorch) -> ours.

Megvii's unit shuffles channels after the 3x3 depthwise conv and its BatchNorm; ours shuffles
before them. Since shuffle(BN(DW(x))) == BN'(DW'(shuffle(x))) when DW' and BN' hold the
depthwise filters and BatchNorm channels permuted by the shuffle, converting is a renaming, a
split of each grouped 1x1 weight into per-group convs, and that permutation. The converted
network uses symmetric pools, a bias-free classifier and Megvii's BGR 0..255 input (preset
`megvii`). Files are `{'state_dict': {'module.…': …}}`, read with `weights_only=True`.
"""
from __future__ import annotations

import numpy as np

from ..models import ModelDescription, describe
from ..models.shufflenet_v1 import model_for_channels
from .common import Lineage, StateDict, bn_field, split_groups

#: Options of our network that reproduce Megvii's topology.
OPTIONS = {"pool_padding": "symmetric", "classifier_bias": False}
PREPROCESSING = "megvii"
SIGNATURE = ("first_conv.0.weight", "classifier.0.weight", "features.1.branch_main_1.0.weight",
             "features.1.branch_main_2.0.weight")
#: (branch, layer index) of Megvii's block -> (our sequence, layer index, how the values move).
_BLOCK_LAYERS = {
    ("branch_main_1", "0"): ("branch_main_1", "0", "split"),
    ("branch_main_1", "1"): ("branch_main_1", "1", "bn"),
    ("branch_main_1", "3"): ("branch_main_2", "0", "shuffled"),
    ("branch_main_1", "4"): ("branch_main_2", "1", "shuffled_bn"),
    ("branch_main_2", "0"): ("branch_main_2", "2", "split"),
    ("branch_main_2", "1"): ("branch_main_2", "3", "bn"),
}


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """Indices `p` with channel_shuffle(x) == x[:, p] (for 12 channels, 3 groups: 0, 3, 6, 9, 1, ...)."""
    return np.arange(channels).reshape(channels // groups, groups).T.reshape(-1)


def recognise(state: StateDict, source: str) -> tuple[str, int]:
    """Registered model name and group count of a Megvii state dict, from its shapes."""
    stage2 = state["features.1.branch_main_2.0.weight"].shape[0]
    groups = stage2 // state["features.1.branch_main_1.0.weight"].shape[1]
    stage4 = state["classifier.0.weight"].shape[1]
    channels = (state["first_conv.0.weight"].shape[0], stage2, 2 * stage2, stage4)
    name = model_for_channels(groups, channels)
    if name is None:
        raise ValueError(f"{source}: groups={groups}, channels {channels} match no registered model")
    return name, groups


def convert_state_dict(state: StateDict, groups: int) -> StateDict:
    """Megvii's names and layout -> ours; every source entry must be used (else ValueError)."""
    out: StateDict = {}
    unused = []
    for key, value in state.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if key == "classifier.0.weight":
            out["classifier.weight"] = value
        elif parts[0] == "first_conv" and len(parts) == 3:
            out[key if parts[1] == "0" else f"first_conv.1.{bn_field(parts[2])}"] = value
        elif parts[0] == "features" and len(parts) == 5 and (parts[2], parts[3]) in _BLOCK_LAYERS:
            block, field = int(parts[1]), parts[4]
            branch, layer, how = _BLOCK_LAYERS[(parts[2], parts[3])]
            prefix = f"features.{block}.{branch}.{layer}"
            if how == "split":
                first_pointwise = block == 0 and (branch, layer) == ("branch_main_1", "0")
                out.update(split_groups(prefix, value, 1 if first_pointwise else groups))
            elif how == "shuffled":
                out[f"{prefix}.weight"] = _shuffled(value, groups)
            else:
                moved = _shuffled(value, groups) if how == "shuffled_bn" else value
                out[f"{prefix}.{bn_field(field)}"] = moved
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"unexpected entries in Megvii's state dict: {', '.join(unused[:8])}")
    return out


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    name, groups = recognise(state, source)
    classes = int(state["classifier.0.weight"].shape[0])
    description = describe(name, classes, options={**OPTIONS, **options}, preprocessing=PREPROCESSING)
    return convert_state_dict(state, groups), description


def _shuffled(value: np.ndarray, groups: int) -> np.ndarray:
    """Per-channel values moved from after the shuffle to before it (see the module docstring)."""
    return value if groups == 1 else value[shuffle_permutation(value.shape[0], groups)]


LINEAGE = Lineage("shufflenet_v1", "megvii", SIGNATURE, convert,
                  torch_reference="shufflenet.lineages.torch_shufflenet_v1_megvii:build_reference")
