"""mindcv's ShuffleNetV2 (`shufflenet_v2_x0_5` ... `shufflenet_v2_x2_0`) -> ours (same names).

mindcv ports Megvii's network as the model zoo does, under the same module names, with a
plain `classifier` (no bias) where the zoo has `classifier.0`: its files hold exactly our
parameter names, and every command loads them as they are (`models.shufflenet_v2` recognises
the layout from the shapes). The network is Megvii's units with MindSpore's 'same' max pool, a
global mean and a bias-free classifier, on ImageNet-normalised RGB input. mindcv saves whatever
its training network holds, so optimizer state (`adam_m.*`, `adam_v.*`, `moments.*`), step
counters, the learning rate, loss scale and EMA copies (`ema.*`) may come along: importing
drops them and records the description.
"""
from __future__ import annotations

from ..utils.checkpoint_schema import META_KEY
from . import shufflenet_v2_mindspore
from .common import Lineage, as_is_converter

#: Options of our network that reproduce mindcv's.
OPTIONS = {"unit_layout": "megvii", "pool_padding": "same", "classifier_bias": False}
PREPROCESSING = "imagenet"
SIGNATURE = ("first_conv.0.weight", "first_conv.1.moving_mean", "features.0.branch_proj.0.weight",
             "conv_last.0.weight", "classifier.weight")
#: A bias (torchvision's layout, or this project's default) or ShuffleNetV2+'s head rule mindcv out;
#: this project's own checkpoints say what they are.
ABSENT = ("classifier.bias", "LastSE.SE_opr.1.weight", META_KEY)

#: Our names without a classifier bias: they load as they are; importing drops the training state.
LINEAGE = Lineage("shufflenet_v2", "mindcv", SIGNATURE,
                  as_is_converter(shufflenet_v2_mindspore.NETWORK, OPTIONS, PREPROCESSING,
                                  "mindcv's ShuffleNetV2"),
                  absent=ABSENT, renames=False)
