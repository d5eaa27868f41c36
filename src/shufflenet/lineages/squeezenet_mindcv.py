"""mindcv's SqueezeNet (`squeezenet1_0`, `squeezenet1_1`) -> ours (same names).

mindcv ports torchvision's layers under torchvision's names, which are ours, so its files load
as they are; but its network differs in two operations, which files without a stored
description are therefore taken to have (`models.squeezenet` recognises them): its max pools
round down (`pool_rounding="floor"`: the 13x13 final map at 224 px becomes 12x12) and its 1.1
pads the stem convolution by 1 (`stem_padding=1`). Importing drops mindcv's training state and
records the description.
"""
from __future__ import annotations

from ..utils.checkpoint_schema import META_KEY
from .common import Lineage, as_is_converter

PREPROCESSING = "imagenet"
SIGNATURE = ("features.0.weight", "features.0.bias", "features.3.squeeze.weight", "classifier.1.weight")
NETWORK = ("features", "classifier")

#: mindcv's options come from the recogniser (the stem padding depends on the version).
LINEAGE = Lineage("squeezenet", "mindcv", SIGNATURE,
                  as_is_converter(NETWORK, {}, PREPROCESSING, "mindcv's SqueezeNet"),
                  absent=(META_KEY,), renames=False)
