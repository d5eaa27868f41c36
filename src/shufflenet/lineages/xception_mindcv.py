"""mindcv's Xception (`xception`) -> ours.

mindcv ports Cadene's network with its blocks in a sequence (`blocks.{0..11}`, ours and Cadene's
`block{1..12}`) and a `classifier` (ours `fc`), a single shared ReLU (no weights), Dropout 0.5
before the classifier (nothing at inference) and 'same'-padded block pools, which differ from
Cadene's symmetric ones on even inputs (`pool_padding="same"`). Converting renames the blocks
and the classifier, drops mindcv's training state and records the description (ImageNet
mean and std, which mindcv's recipe uses, not Cadene's [-1, 1]).
"""
from __future__ import annotations

import re

from ..models import ModelDescription
from ..utils.checkpoint_schema import META_KEY
from .common import Lineage, StateDict, convert_renamed, network_entries

OPTIONS = {"pool_padding": "same"}
#: mindcv trains and evaluates every model on ImageNet-normalised input (its Xception recipe too).
PREPROCESSING = "imagenet"
SIGNATURE = ("conv1.weight", "bn1.moving_mean", "blocks.0.rep.0.conv1.weight", "conv4.pointwise.weight",
             "classifier.weight")
NETWORK = ("conv1", "bn1", "conv2", "bn2", "blocks", "conv3", "bn3", "conv4", "bn4", "classifier")


def our_name(key: str) -> str:
    """`blocks.11.skip.weight` -> `block12.skip.weight`, `classifier.bias` -> `fc.bias`."""
    key = re.sub(r"^blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.", key)
    return "fc." + key[len("classifier."):] if key.startswith("classifier.") else key


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    entries = network_entries(state, NETWORK)
    return convert_renamed(entries, {key: our_name(key) for key in entries}, source, options, OPTIONS,
                           PREPROCESSING, "mindcv's Xception")


LINEAGE = Lineage("xception", "mindcv", SIGNATURE, convert, absent=(META_KEY,))
