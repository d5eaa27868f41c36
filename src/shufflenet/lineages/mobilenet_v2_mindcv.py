"""mindcv's MobileNetV2 (`mobilenet_v2_035` ... `mobilenet_v2_140`) -> ours (same names).

mindcv builds torchvision's network (the same `make_divisible` widths, Dropout 0.2) under the
names ours uses: `features.0/1` the stem, `features.{3..19}.layers.{k}` the inverted residuals,
`features.20/21` the last convolution, `classifier.1`. Its files load as they are
(`models.mobilenet_v2` recognises the width from the shapes); importing drops the training
state mindcv saves alongside.
"""
from __future__ import annotations

from ..utils.checkpoint_schema import META_KEY
from .common import Lineage, as_is_converter

PREPROCESSING = "imagenet"
SIGNATURE = ("features.0.weight", "features.1.moving_mean", "features.3.layers.0.weight",
             "classifier.1.weight")
NETWORK = ("features", "classifier")

LINEAGE = Lineage("mobilenet_v2", "mindcv", SIGNATURE,
                  as_is_converter(NETWORK, {}, PREPROCESSING, "mindcv's MobileNetV2"),
                  absent=(META_KEY,), renames=False)
