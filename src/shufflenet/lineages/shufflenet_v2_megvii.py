"""Megvii's ShuffleNetV2 and ShuffleNetV2+ (github.com/megvii-model/ShuffleNet-Series, PyTorch) -> ours.

Megvii's ShuffleNetV2 unit shuffles at its input: a stride-1 unit passes the even channels on
and processes the odd ones, and a stride-2 unit's projection keeps all `in` channels while its
main branch makes `out - in`. The max pool pads symmetrically, the classifier
(`classifier.0`) has no bias, and inputs are BGR in 0..255 without normalisation (preset
`megvii`). Our `unit_layout="megvii"` is that network with Megvii's own module names
(`first_conv`, `features.{i}.branch_main/branch_proj`, `conv_last`), so converting renames
only `classifier.0` -> `classifier` and the BatchNorm fields (`running_var` ->
`moving_variance`, ...). ShuffleNetV2+ (its `LastSE`, `SE_opr`, `fc.0` and hard-swish units)
is ours with Megvii's names too and converts the same way; it has no network options. Files are
`{'state_dict': {'module.…': …}}`, read with `weights_only=True`.
"""
from __future__ import annotations

from ..models import ModelDescription
from .common import Lineage, StateDict, convert_renamed, torch_entry_names

#: Options of our ShuffleNetV2 that reproduce Megvii's (ShuffleNetV2+ has none).
OPTIONS = {"unit_layout": "megvii", "pool_padding": "symmetric", "classifier_bias": False}
PREPROCESSING = "megvii"
SIGNATURE = ("first_conv.0.weight", "first_conv.1.running_mean", "features.0.branch_proj.0.weight",
             "features.1.branch_main.0.weight", "conv_last.0.weight", "classifier.0.weight")
#: What only ShuffleNetV2+ has: the SE layer on the pooled features.
SIGNATURE_PLUS = ("first_conv.0.weight", "LastSE.SE_opr.1.weight", "fc.0.weight", "classifier.0.weight")
_TORCH_REFERENCE = "shufflenet.lineages.torch_shufflenet_v2_megvii:build_reference"


def module_name(path: str) -> str | None:
    """Our module of a Megvii module path: the same but for the classifier's `Sequential`."""
    return "classifier" if path == "classifier.0" else path


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """Megvii's ShuffleNetV2, renamed; the width comes from the stage shapes."""
    return convert_renamed(state, torch_entry_names(state, module_name), source, options, OPTIONS,
                           PREPROCESSING, "Megvii's ShuffleNetV2")


def convert_plus(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """Megvii's ShuffleNetV2+, renamed; the size comes from the stage shapes."""
    return convert_renamed(state, torch_entry_names(state, module_name), source, options, {},
                           PREPROCESSING, "Megvii's ShuffleNetV2+")


LINEAGE = Lineage("shufflenet_v2", "megvii", SIGNATURE, convert, torch_reference=_TORCH_REFERENCE,
                  absent=("LastSE.SE_opr.1.weight",))
LINEAGE_PLUS = Lineage("shufflenet_v2_plus", "megvii", SIGNATURE_PLUS, convert_plus,
                       torch_reference=_TORCH_REFERENCE)
