"""ShuffleNetV1 checkpoints of the MindSpore tutorial and model zoo -> ours (same names).

They already use our parameter names (`features.{i}.branch_main_1.0.convs.{k}.weight`, ...), so
importing one recognises the model from its shapes, drops optimizer state and step counters,
and stores the description. Without a stored description, the tutorial's and the zoo's
conventions apply: 'same' pools, a classifier with bias, ImageNet-normalised RGB input.
"""
from __future__ import annotations

from ..models import ModelDescription, describe_checkpoint
from .common import Lineage, StateDict

SIGNATURE = ("first_conv.0.weight", "classifier.weight", "features.1.branch_main_1.0.convs.0.weight")


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    description = describe_checkpoint(state, options=options, source=source)
    return {key: value for key, value in state.items() if hasattr(value, "shape")}, description


LINEAGE = Lineage("shufflenet_v1", "mindspore", SIGNATURE, convert)
