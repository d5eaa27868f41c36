"""Cadene's and timm's Xception (`xception-43020ad28.pth`, which both publish; PyTorch) -> ours.

Our Xception holds their names, so converting renames only the BatchNorm fields (and Cadene's
`last_linear`, the name its model object gives `fc` after loading) and records the description:
symmetric pools, inputs scaled to [-1, 1] (preset `inception`), 299 px. Cadene's earlier release
(`xception-b5690688.pth`, before PyTorch 0.4) stored pointwise weights as matrices; they are
read as the 1x1 convolutions they are. Files are bare state dicts (`.pth`).
"""
from __future__ import annotations

from ..models import ModelDescription
from .common import Lineage, StateDict, convert_renamed, torch_entry_names

#: Options of our network that reproduce Cadene's.
OPTIONS = {"pool_padding": "symmetric"}
PREPROCESSING = "inception"
SIGNATURE = ("conv1.weight", "bn1.running_mean", "block1.rep.0.conv1.weight", "block1.rep.0.pointwise.weight",
             "block12.skip.weight", "conv4.pointwise.weight")


def module_name(path: str) -> str:
    return "fc" if path == "last_linear" else path


def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
    """Cadene's entries, BatchNorm fields renamed, matrices of 1x1 convolutions made 4-D."""
    state = {key: value[:, :, None, None] if key.endswith("pointwise.weight") and value.ndim == 2 else value
             for key, value in state.items()}
    return convert_renamed(state, torch_entry_names(state, module_name), source, options, OPTIONS,
                           PREPROCESSING, "Cadene's and timm's Xception")


LINEAGE = Lineage("xception", "timm", SIGNATURE, convert,
                  torch_reference="shufflenet.lineages.torch_xception_timm:build_reference")
