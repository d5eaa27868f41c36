"""Bring published ShuffleNetV1 weights into this project as checkpoints with a description.

Megvii's PyTorch release (`{'state_dict': {'module.…': …}}`) differs from our network in where
the channel shuffle sits: after the 3x3 depthwise conv and its BatchNorm there, before them
here. Since shuffle(BN(DW(x))) == BN'(DW'(shuffle(x))) when DW' and BN' hold the depthwise
filters and BatchNorm channels permuted by the shuffle, converting is a renaming, a split of
each grouped 1x1 weight into per-group convs, and that permutation. The converted network uses
symmetric pools, a bias-free classifier and Megvii's BGR 0..255 input (preset `megvii`).

Checkpoints of the MindSpore tutorial and model zoo already use our names; importing one only
recognises the model, drops optimizer state and stores the description.

PyTorch files are read with `torch.load(weights_only=True)`, so no pickled code runs.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

from ..utils.checkpoint import (
    META_KEY,
    CheckpointError,
    load_weights,
    model_description,
    read_checkpoint,
    save_checkpoint,
)
from .loading import build_network, describe_checkpoint, model_for_channels

#: Options of our network that reproduce Megvii's topology.
MEGVII_OPTIONS = {"pool_padding": "symmetric", "classifier_bias": False}
#: What torch.load raises on a damaged file or one that needs pickled code (KeyError, IndexError,
#: struct.error come from the weights-only unpickler reading garbage).
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError,
               KeyError, IndexError, TypeError, struct.error)
_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """Indices `p` with channel_shuffle(x) == x[:, p] (for 12 channels, 3 groups: 0, 3, 6, 9, 1, ...)."""
    return np.arange(channels).reshape(channels // groups, groups).T.reshape(-1)


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A PyTorch checkpoint's tensors by name, without `module.` prefixes, as float32 arrays.

    Accepts `{'state_dict': {...}}` (Megvii's release) or a bare state dict. Loading uses
    `weights_only=True`: a file that needs arbitrary pickled objects is refused, not run.
    """
    try:
        import torch
    except ImportError:
        raise ValueError('reading PyTorch checkpoints needs PyTorch: pip install -e ".[torch]"') from None

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the path of Megvii's .pth.tar file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{path} is not a PyTorch checkpoint that loads with weights_only=True "
            f"({type(err).__name__}: {first_line[:200]}); "
            "pass Megvii's released .pth.tar file"
        ) from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} holds no state dict; expected {{'state_dict': {{'module.…': tensor}}}}")
    return {_strip_module(key): value.detach().cpu().numpy().astype(np.float32)
            for key, value in state.items() if isinstance(value, torch.Tensor)}


def infer_megvii_model(state: dict[str, np.ndarray], source: str = "the checkpoint") -> dict[str, Any]:
    """Registered model name, group count and classes of a Megvii state dict, from its shapes."""
    needed = ("first_conv.0.weight", "classifier.0.weight", "features.1.branch_main_1.0.weight",
              "features.1.branch_main_2.0.weight")
    missing = [key for key in needed if key not in state]
    if missing:
        raise ValueError(f"{source} is not Megvii's ShuffleNetV1 (no {missing[0]}); "
                         "for a MindSpore checkpoint use --source mindspore")
    stage2 = state["features.1.branch_main_2.0.weight"].shape[0]
    groups = stage2 // state["features.1.branch_main_1.0.weight"].shape[1]
    num_classes, stage4 = state["classifier.0.weight"].shape
    channels = (state["first_conv.0.weight"].shape[0], stage2, 2 * stage2, stage4)
    name = model_for_channels(groups, channels)
    if name is None:
        raise ValueError(f"{source}: groups={groups}, channels {channels} match no registered model")
    return {"model": name, "groups": groups, "num_classes": int(num_classes)}


def convert_megvii_state_dict(state: dict[str, np.ndarray], groups: int) -> dict[str, np.ndarray]:
    """Megvii's names and layout -> ours; every source entry must be used (else ValueError)."""
    out: dict[str, np.ndarray] = {}
    unused = []
    for key, value in state.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if key == "classifier.0.weight":
            out["classifier.weight"] = value
        elif parts[0] == "first_conv" and len(parts) == 3:
            out[key if parts[1] == "0" else f"first_conv.1.{_BN_NAMES[parts[2]]}"] = value
        elif parts[0] == "features" and len(parts) == 5:
            block, branch, layer, field = int(parts[1]), parts[2], parts[3], parts[4]
            prefix = f"features.{block}"
            conv_groups = 1 if block == 0 and branch == "branch_main_1" else groups
            if (branch, layer) == ("branch_main_1", "0"):
                out.update(_split_groups(f"{prefix}.branch_main_1.0", value, conv_groups))
            elif (branch, layer) == ("branch_main_1", "1"):
                out[f"{prefix}.branch_main_1.1.{_BN_NAMES[field]}"] = value
            elif (branch, layer) == ("branch_main_1", "3"):
                out[f"{prefix}.branch_main_2.0.weight"] = _shuffled(value, groups)
            elif (branch, layer) == ("branch_main_1", "4"):
                out[f"{prefix}.branch_main_2.1.{_BN_NAMES[field]}"] = _shuffled(value, groups)
            elif (branch, layer) == ("branch_main_2", "0"):
                out.update(_split_groups(f"{prefix}.branch_main_2.2", value, conv_groups))
            elif (branch, layer) == ("branch_main_2", "1"):
                out[f"{prefix}.branch_main_2.3.{_BN_NAMES[field]}"] = value
            else:
                unused.append(key)
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"unexpected entries in Megvii's state dict: {', '.join(unused[:8])}")
    return out


def convert_megvii(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | None = None,
    class_names: list[str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Convert Megvii's `.pth.tar` to a checkpoint of the matching variant; returns (path, description)."""
    state = read_torch_checkpoint(src)
    found = infer_megvii_model(state, source=str(src))
    if model is not None and model != found["model"]:
        raise ValueError(f"{src} holds {found['model']}, not --model {model}")
    description = model_description(found["model"], found["num_classes"], MEGVII_OPTIONS, "megvii",
                                     class_names=_checked_names(class_names, found["num_classes"]))
    params = convert_megvii_state_dict(state, found["groups"])
    return _save(params, description, dst, str(src)), description


def import_mindspore_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | None = None,
    pool_padding: str | None = None,
    class_names: list[str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Re-save a tutorial/zoo checkpoint with its description (model recognised from shapes).

    Optimizer state and step counters are dropped. Without a stored description, the tutorial's
    and the zoo's conventions apply: 'same' pools and ImageNet-normalised RGB input.
    """
    params = read_checkpoint(src)
    options = {} if pool_padding is None else {"pool_padding": pool_padding}
    description = describe_checkpoint(params, model, options=options, source=str(src))
    if class_names is not None:
        description["class_names"] = _checked_names(class_names, description["num_classes"])
    arrays = {key: value.asnumpy() for key, value in params.items() if key != META_KEY}
    return _save(arrays, description, dst, str(src)), description


def compare_with_megvii(
    ckpt: str | os.PathLike, src: str | os.PathLike, image_size: int = 224, batch: int = 2
) -> dict[str, float]:
    """Logits of a converted checkpoint vs Megvii's network (rebuilt in PyTorch) on one probe batch.

    Needs PyTorch. Returns the largest absolute and relative (to the largest logit) difference.
    """
    import torch

    from ..data.presets import get_preprocessing
    from ..models.torch_megvii import build_megvii_shufflenet_v1
    from .exporter import probe_batch
    from .loading import load_network

    state = read_torch_checkpoint(src)
    found = infer_megvii_model(state, source=str(src))
    net, _ = load_network(ckpt)
    groups, width = net.groups, net.width
    reference = build_megvii_shufflenet_v1(groups, width, found["num_classes"])
    missing, unexpected = reference.load_state_dict(
        {key: torch.from_numpy(value) for key, value in state.items()}, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{src} does not fit Megvii's network: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    reference.eval()
    inputs = probe_batch(batch, image_size, get_preprocessing("megvii"))
    with torch.no_grad():
        expected = reference(torch.from_numpy(inputs)).numpy()
    actual = net(ms.Tensor(inputs)).asnumpy()
    diff = float(np.abs(actual - expected).max())
    return {"max_abs_diff": diff, "max_relative_diff": diff / float(np.abs(expected).max())}


def _save(params: dict[str, np.ndarray], description: dict[str, Any], dst: str | os.PathLike,
          source: str) -> Path:
    """Load `params` strictly into the described network and save it with the description."""
    net = build_network(description)
    tensors = {key: ms.Parameter(ms.Tensor(value), name=key) for key, value in params.items()}
    try:
        load_weights(net, tensors, source=source)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    return save_checkpoint(net, dst, extra={META_KEY: json.dumps(description)})


def _split_groups(prefix: str, weight: np.ndarray, groups: int) -> dict[str, np.ndarray]:
    """A grouped 1x1 conv weight (out, in/g, 1, 1) as `GroupConv`'s per-group `convs.{k}.weight`."""
    return {f"{prefix}.convs.{k}.weight": part for k, part in enumerate(np.split(weight, groups, axis=0))}


def _shuffled(value: np.ndarray, groups: int) -> np.ndarray:
    """Per-channel values moved from after the shuffle to before it (see the module docstring)."""
    return value if groups == 1 else value[shuffle_permutation(value.shape[0], groups)]


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _checked_names(class_names: list[str] | None, num_classes: int) -> list[str] | None:
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for a {num_classes}-class model")
    return class_names
