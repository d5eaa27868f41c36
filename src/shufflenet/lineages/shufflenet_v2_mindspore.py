"""ShuffleNetV2 checkpoints of the MindSpore model zoo (`official/cv/ShuffleNet/shufflenetv2`) -> ours.

The zoo ports Megvii's network to MindSpore under Megvii's module names, so its checkpoints
hold our (and mindcv's) names but for the bias-free classifier, a one-cell `SequentialCell` as
in Megvii's code: `classifier.0.weight`. What differs from Megvii's network is what MindSpore
gave the port: the stem's max pool pads 'same' (bottom and right only), BatchNorm momentum is
0.9 (training only), and it trains on ImageNet-normalised RGB input; its `AvgPool2d(7)` is the
global mean at 224x224, which ours is at any size. Converting renames the classifier, drops the
optimizer state (`moments.*`), learning rate and step counters the zoo's `ModelCheckpoint`
saves alongside, and records the description: Megvii's unit layout, 'same' pools, no
classifier bias, preset `imagenet`.
"""
from __future__ import annotations

from ..models import ModelDescription
from .common import Lineage, StateDict, convert_renamed, network_entries

#: Options of our network that reproduce the zoo's.
OPTIONS = {"unit_layout": "megvii", "pool_padding": "same", "classifier_bias": False}
PREPROCESSING = "imagenet"
SIGNATURE = ("first_conv.0.weight", "first_conv.1.moving_mean", "features.0.branch_proj.0.weight",
             "conv_last.0.weight", "classifier.0.weight")
#: Top-level cells of the zoo's network; other entries of its files are training state.
NETWORK = ("first_conv", "features", "conv_last", "classifier")
#: The zoo's names that are not ours.
_RENAMED = {"classifier.0.weight": "classifier.weight"}


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """The zoo's network entries with our classifier name; the width comes from the shapes."""
    entries = network_entries(state, NETWORK)
    names = {key: _RENAMED.get(key, key) for key in entries}
    return convert_renamed(entries, names, source, options, OPTIONS, PREPROCESSING,
                           "the model zoo's ShuffleNetV2")


LINEAGE = Lineage("shufflenet_v2", "mindspore", SIGNATURE, convert)
