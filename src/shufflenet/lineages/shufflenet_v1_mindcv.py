"""mindcv's ShuffleNetV1 (`shufflenet_v1_g3_05` ... `shufflenet_v1_g8_20`) -> ours.

mindcv has two layouts. Release 0.3.0 (what `pip install mindcv` gives, and the layout of its
published `shufflenet_v1_g3_05-42cfe109.ckpt` and `shufflenet_v1_g3_10-245f0ccf.ckpt`) holds
each grouped 1x1 convolution as one native grouped `nn.Conv2d`,
`features.{i}.branch_main_1.0.weight` of shape (mid, in/g, 1, 1) and
`features.{i}.branch_main_2.2.weight`; converting splits them into our per-group `convs.{k}` (the
same weights, so the same outputs). mindcv's main branch (2024 on, unreleased) uses `convs.{k}`
itself, so its files already have our names; what tells them from the zoo's is the bias-free
classifier. Either way the network is mindcv's: 'same' pools, a global mean and a bias-free
classifier, ImageNet-normalised RGB input. mindcv saves whatever its training network holds, so
optimizer state (`adam_m.*`, `adam_v.*`, `moments.*`), step counters, the learning rate, loss
scale and EMA copies (`ema.*`) may come along: they are dropped. mindcv's own `validate.py` also
evaluates the trained, not the EMA, weights unless told otherwise.
"""
from __future__ import annotations

from ..models import ModelDescription, describe
from ..models.shufflenet_v1 import model_for_channels
from ..utils.checkpoint_schema import META_KEY
from . import shufflenet_v1_mindspore
from .common import Lineage, StateDict, network_entries, split_groups

#: Options of our network that reproduce mindcv's.
OPTIONS = {"pool_padding": "same", "classifier_bias": False}
PREPROCESSING = "imagenet"
SIGNATURE = ("first_conv.0.weight", "classifier.weight", "features.1.branch_main_1.0.weight",
             "features.1.branch_main_2.2.weight")
#: First names of the network's own entries; anything else in a mindcv file is training state.
NETWORK = ("first_conv", "features", "classifier")
_BN = ("gamma", "beta", "moving_mean", "moving_variance")
#: (sequence, layer index) of a mindcv 0.3.0 block -> what the layer holds.
_BLOCK_LAYERS = {("branch_main_1", "0"): "grouped", ("branch_main_1", "1"): "bn",
                 ("branch_main_2", "0"): "depthwise", ("branch_main_2", "1"): "bn",
                 ("branch_main_2", "2"): "grouped", ("branch_main_2", "3"): "bn"}


def recognise(state: StateDict, source: str) -> tuple[str, int]:
    """Registered model name and group count of a mindcv 0.3.0 state dict, from its shapes.

    Block 1 maps the stage-2 width onto itself: its last grouped conv outputs stage 2's
    channels, and its first one takes them in groups of stage2 / g.
    """
    stage2 = state["features.1.branch_main_2.2.weight"].shape[0]
    groups = stage2 // state["features.1.branch_main_1.0.weight"].shape[1]
    stem, stage4 = state["first_conv.0.weight"].shape[0], state["classifier.weight"].shape[1]
    channels = (stem, stage2, 2 * stage2, stage4)
    name = model_for_channels(groups, channels)
    if name is None:
        raise ValueError(f"{source}: groups={groups}, channels {channels} match no registered model "
                         "(mindcv has g3 and g8 at 0.5x, 1.0x, 1.5x, 2.0x)")
    return name, groups


def convert_state_dict(state: StateDict, groups: int, source: str) -> StateDict:
    """mindcv 0.3.0's network entries -> ours; an entry of no known layer is a ValueError."""
    out: StateDict = {}
    unknown = []
    for key, value in network_entries(state, NETWORK).items():
        parts = key.split(".")
        kind = _BLOCK_LAYERS.get(tuple(parts[2:4])) if parts[0] == "features" and len(parts) == 5 else None
        if kind == "grouped" and parts[4] == "weight":
            first_pointwise = parts[1] == "0" and parts[2] == "branch_main_1"
            out.update(split_groups(key[:-len(".weight")], value, 1 if first_pointwise else groups))
        elif (kind == "depthwise" and parts[4] == "weight") or (kind == "bn" and parts[4] in _BN):
            out[key] = value
        elif key in ("first_conv.0.weight", "classifier.weight", "classifier.bias") or (
                key.startswith("first_conv.1.") and parts[-1] in _BN and len(parts) == 3):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{source}: entries of no layer of mindcv's ShuffleNetV1: {', '.join(unknown[:8])}")
    return out


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """A mindcv 0.3.0 file (native grouped convs): split them, describe mindcv's network."""
    name, groups = recognise(state, source)
    classes = int(state["classifier.weight"].shape[0])
    found = {"classifier_bias": "classifier.bias" in state}
    description = describe(name, classes, options={**OPTIONS, **found, **options},
                           preprocessing=PREPROCESSING)
    return convert_state_dict(state, groups, source), description


def convert_split(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """A mindcv main file (`convs.{k}`): our names already, so only its training state goes."""
    params, description = shufflenet_v1_mindspore.convert(network_entries(state, NETWORK), source, options)
    return params, description.replace(options={**OPTIONS, **options}, preprocessing=PREPROCESSING)


#: mindcv 0.3.0 and its published checkpoints: native grouped convs, renamed on import.
LINEAGE = Lineage("shufflenet_v1", "mindcv", SIGNATURE, convert)
#: mindcv main (`convs.{k}`): our names without a classifier bias; they load as they are.
LINEAGE_SPLIT = Lineage("shufflenet_v1", "mindcv", shufflenet_v1_mindspore.SIGNATURE, convert_split,
                        absent=("classifier.bias", META_KEY), renames=False)
