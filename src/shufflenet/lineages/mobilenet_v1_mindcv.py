"""mindcv's MobileNetV1 (`mobilenet_v1_025` ... `mobilenet_v1_100`) -> ours (same names).

mindcv builds the paper's network (ReLU, a classifier with a bias) under the names ours uses:
`features.0/1` the stem, `features.{3..15}.{0,1,3,4}` the depthwise-separable blocks,
`classifier`. Its files load as they are (`models.mobilenet_v1` recognises the width from the
shapes); its published checkpoints have 1001 classes, which the description records: mindcv
trains them on labels 0..999, so the last logit is never a target (its `load_pretrained` keeps
rows [:1000] when asked for 1000 classes; `create_model(..., num_classes=1000)` re-initialises).
Importing drops the training state mindcv saves alongside.
"""
from __future__ import annotations

from ..utils.checkpoint_schema import META_KEY
from .common import Lineage, as_is_converter

#: Options of our network that reproduce mindcv's.
OPTIONS = {"activation": "relu"}
PREPROCESSING = "imagenet"
SIGNATURE = ("features.0.weight", "features.1.moving_mean", "features.3.0.weight", "features.3.3.weight",
             "classifier.weight")
NETWORK = ("features", "classifier")

LINEAGE = Lineage("mobilenet_v1", "mindcv", SIGNATURE,
                  as_is_converter(NETWORK, OPTIONS, PREPROCESSING, "mindcv's MobileNetV1"),
                  absent=(META_KEY,), renames=False)
