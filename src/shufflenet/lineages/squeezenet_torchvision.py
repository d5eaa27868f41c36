"""torchvision's SqueezeNet (`torchvision.models.squeezenet1_0`, `squeezenet1_1`, PyTorch) -> ours.

Our SqueezeNet is torchvision's under torchvision's names (`features.{i}.squeeze/expand1x1/
expand3x3`, `classifier.1`), so converting renames nothing; it reads the file, records
torchvision's network (ceil-mode pools, unpadded stem; the defaults of files with these names
are mindcv's) and ImageNet-normalised RGB input, and checks every entry lands on a parameter.
Files are bare state dicts (`.pth`).
"""
from __future__ import annotations

from ..models import ModelDescription
from .common import Lineage, StateDict, convert_renamed, torch_entry_names

#: Options of our network that reproduce torchvision's.
OPTIONS = {"pool_rounding": "ceil", "stem_padding": 0}
PREPROCESSING = "imagenet"
SIGNATURE = ("features.0.weight", "features.0.bias", "features.3.squeeze.weight", "classifier.1.weight")


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """torchvision's entries under their own names; the version comes from the stem's shape."""
    return convert_renamed(state, torch_entry_names(state, lambda path: path), source, options, OPTIONS,
                           PREPROCESSING, "torchvision's SqueezeNet")


LINEAGE = Lineage("squeezenet", "torchvision", SIGNATURE, convert,
                  torch_reference="shufflenet.lineages.torch_squeezenet_torchvision:build_reference")
