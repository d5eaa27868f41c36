"""Weights published by other lineages, converted into checkpoints of this project.

A lineage is one (network family, publisher) pair: Megvii's PyTorch ShuffleNetV1, mindcv's, the
MindSpore tutorial's and model zoo's, torchvision's ShuffleNetV2, Megvii's ShuffleNetV2 and V2+,
timm's MobileNetV1, torchvision's MobileNetV2, SqueezeNet and Xception, ... Each lives in a module of its own,
`<family>_<origin>.py`, that says how to recognise its state dicts, how to rename and reorder them
into ours and which network options and preprocessing reproduce it; where the publisher's network
is PyTorch, a rebuild with its exact state-dict names sits beside it in
`torch_<family>_<origin>.py`. A new family or publisher adds a module to `LINEAGES`, not a branch
anywhere else.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..models import ModelDescription, model_entry
from ..utils.checkpoint_schema import META_KEY
from . import (
    mobilenet_v1_mindcv,
    mobilenet_v1_timm,
    mobilenet_v2_mindcv,
    mobilenet_v2_torchvision,
    shufflenet_v1_megvii,
    shufflenet_v1_mindcv,
    shufflenet_v1_mindspore,
    shufflenet_v2_megvii,
    shufflenet_v2_mindcv,
    shufflenet_v2_mindspore,
    shufflenet_v2_torchvision,
    squeezenet_mindcv,
    squeezenet_torchvision,
    xception_mindcv,
    xception_timm,
)
from .common import TORCH_ORIGINS, Lineage, load_source, save_converted

#: Every lineage, tried in this order when a file's origin is not given: mindcv's before the
#: tutorial's and zoo's, whose names mindcv's `convs.{k}` files share but for the classifier bias.
#: V2's signatures fit no V1 file nor each other (V1 has `branch_main_1/2`, V2 `branch_main` and
#: `branch_proj`; V2's rule out V2+'s `LastSE`), so among them the order only picks
#: `torch_reference`'s default peer: Megvii's, the network of the family's published figures and
#: `published_options`, which benchmarks build on the MindSpore side. The MobileNets' names fit
#: no ShuffleNet's (`features.3.0` / `features.3.layers` / timm's `conv_stem` and `blocks`), nor
#: SqueezeNet's (`features.3.squeeze`) or Xception's (`block1.rep`, mindcv's `blocks.0.rep`).
LINEAGES: tuple[Lineage, ...] = (shufflenet_v1_mindcv.LINEAGE, shufflenet_v1_mindcv.LINEAGE_SPLIT,
                                 shufflenet_v1_mindspore.LINEAGE, shufflenet_v1_megvii.LINEAGE,
                                 shufflenet_v2_megvii.LINEAGE, shufflenet_v2_megvii.LINEAGE_PLUS,
                                 shufflenet_v2_torchvision.LINEAGE, shufflenet_v2_mindcv.LINEAGE,
                                 shufflenet_v2_mindspore.LINEAGE, mobilenet_v1_timm.LINEAGE,
                                 mobilenet_v1_mindcv.LINEAGE, mobilenet_v2_torchvision.LINEAGE,
                                 mobilenet_v2_mindcv.LINEAGE, squeezenet_torchvision.LINEAGE,
                                 squeezenet_mindcv.LINEAGE, xception_timm.LINEAGE, xception_mindcv.LINEAGE)
ORIGINS = tuple(dict.fromkeys(lineage.origin for lineage in LINEAGES))
#: Publishers whose files are MindSpore checkpoints (.ckpt).
MINDSPORE_ORIGINS = tuple(origin for origin in ORIGINS if origin not in TORCH_ORIGINS)


def guess_origins(path: Path) -> tuple[str, ...]:
    """Publishers whose files `path` may be, from its extension: every MindSpore publisher for
    .ckpt, every PyTorch publisher (Megvii, torchvision, timm) for .pth, .pth.tar, .tar, .pt and
    .bin and .safetensors (Hugging Face's `pytorch_model.bin`, `model.safetensors`); the names
    inside decide."""
    if path.suffix.lower() == ".ckpt":
        return MINDSPORE_ORIGINS
    if path.suffix.lower() in (".pth", ".tar", ".pt", ".bin", ".safetensors"):
        return TORCH_ORIGINS
    raise ValueError(f"cannot tell the lineage of {path} from its extension; "
                     f"pass --source {'|'.join(ORIGINS)}")


def find_lineage(state: dict, origins: tuple[str, ...], source: str) -> Lineage:
    """The first lineage of one of `origins` whose names `state` has."""
    unknown = [origin for origin in origins if origin not in ORIGINS]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r}; valid: {', '.join(ORIGINS)}")
    candidates = [lineage for lineage in LINEAGES if lineage.origin in origins]
    for lineage in candidates:
        if lineage.matches(state):
            return lineage
    known = ", ".join(dict.fromkeys(f"{lineage.origin} {lineage.family}" for lineage in candidates))
    raise ValueError(f"{source} holds weights of no known lineage ({known}); "
                     f"check --source ({'|'.join(ORIGINS)})")


def identify(params: dict) -> Lineage | None:
    """The lineage of a MindSpore checkpoint's entries, or None (this project's own, or unknown)."""
    if META_KEY in params:
        return None
    return next((lineage for lineage in LINEAGES
                 if lineage.origin in MINDSPORE_ORIGINS and lineage.matches(params)), None)


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    origin: str | None = None,
    model: str | None = None,
    class_names: list[str] | None = None,
    options: dict | None = None,
    preprocessing: str | None = None,
) -> tuple[Path, ModelDescription, Lineage]:
    """Convert `src` into the checkpoint `dst` with its description; returns what was written."""
    src = Path(src)
    origins = (origin,) if origin else guess_origins(src)
    state = load_source(src, origins[0])
    lineage = find_lineage(state, origins, str(src))
    params, description = lineage.convert(state, str(src), options or {})
    if model is not None and model != description.model:
        raise ValueError(f"{src} holds {description.model}, not --model {model}")
    if class_names is not None:
        description = description.replace(class_names=tuple(class_names))
    if preprocessing is not None:
        description = description.replace(preprocessing=preprocessing)
    return save_converted(params, description, dst, str(src)), description, lineage


def torch_reference(description: ModelDescription, lineage: Lineage | None = None):
    """The publisher's network in PyTorch (`lineage`'s, else the first of the model's family that
    has one), untrained, in training mode: the peer of comparisons and benchmarks."""
    import importlib

    family = model_entry(description.model).family
    candidates = [lineage] if lineage else [x for x in LINEAGES if x.family == family]
    for candidate in candidates:
        if candidate.torch_reference:
            module_name, builder = candidate.torch_reference.split(":")
            return getattr(importlib.import_module(module_name), builder)(description)
    raise ValueError(f"no PyTorch rebuild of a {family} lineage is registered")


__all__ = ["LINEAGES", "MINDSPORE_ORIGINS", "ORIGINS", "Lineage", "convert_file",
           "find_lineage", "guess_origins", "identify"]
