"""Rebuild a network from a checkpoint: from its stored description, or inferred from its shapes.

Checkpoints written by this project carry a `model_description` (model name, classes, options,
preprocessing); foreign ones (the MindSpore tutorial's, the model zoo's) do not, so the model
is recognised from parameter shapes, which pin the group count and width exactly.
"""
from __future__ import annotations

import os
from typing import Any

from mindspore import nn

from ..models import create_model, list_models, model_arch, stage_channels
from ..utils.checkpoint import (
    CheckpointError,
    load_weights,
    model_description,
    read_checkpoint,
    read_description,
)

#: Preprocessing and image size assumed for a foreign MindSpore checkpoint (tutorial, zoo).
FOREIGN_PREPROCESSING = "imagenet"


def model_for_channels(groups: int, channels: tuple[int, ...]) -> str | None:
    """The registered model whose group count and (stem, stage 2-4) channels are these."""
    for name in list_models():
        arch = model_arch(name)
        if arch["groups"] == groups and stage_channels(groups, arch["width"]) == tuple(channels):
            return name
    return None


def infer_model(params: dict[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    """Model name, classes and classifier bias of a checkpoint with this project's names.

    The group count is the number of `convs.{k}` of block 1's first grouped conv (the first
    block's is ungrouped); the stage widths come from the stem, block 1 and the classifier.
    """
    needed = ("first_conv.0.weight", "classifier.weight", "features.1.branch_main_1.0.convs.0.weight")
    missing = [key for key in needed if key not in params]
    if missing:
        raise CheckpointError(
            f"{source} is not a ShuffleNetV1 checkpoint with tutorial/zoo names (no {missing[0]}); "
            "pass --model, or convert Megvii's PyTorch weights with `shufflenet convert`"
        )
    groups = sum(1 for key in params if key.startswith("features.1.branch_main_1.0.convs.")
                 and key.endswith(".weight"))
    stage2 = params["features.1.branch_main_1.0.convs.0.weight"].shape[1] * groups
    num_classes, stage4 = params["classifier.weight"].shape
    channels = (params["first_conv.0.weight"].shape[0], stage2, 2 * stage2, stage4)
    name = model_for_channels(groups, channels)
    if name is None:
        raise CheckpointError(
            f"{source} has groups={groups} and channels {channels}, which match no registered "
            "model; pass --model (see `shufflenet summary`)"
        )
    return {"model": name, "num_classes": int(num_classes),
            "classifier_bias": "classifier.bias" in params}


def describe_checkpoint(
    params: dict[str, Any],
    model: str | None = None,
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
    source: str = "the checkpoint",
) -> dict[str, Any]:
    """The checkpoint's `model_description`, completed from its shapes and overridden by arguments.

    Arguments win over the stored description, which wins over what the shapes say. A foreign
    checkpoint gets the tutorial/zoo conventions: 'same' pools and ImageNet preprocessing.
    """
    stored = read_description(params)
    if stored is None:
        inferred = infer_model(params, source) if model is None else {}
        stored = model_description(
            inferred.get("model", model),
            inferred.get("num_classes") or num_classes or _classes_in(params),
            {"classifier_bias": "classifier.bias" in params},
            preprocessing=FOREIGN_PREPROCESSING,
        )
    description = dict(stored)
    if model is not None:
        description["model"] = model
    if num_classes is not None and num_classes != description["num_classes"]:
        description["num_classes"] = num_classes
        description["class_names"] = [str(i) for i in range(num_classes)]
    description["options"] = {**description.get("options", {}), **(options or {})}
    return description


def build_network(description: dict[str, Any], group_conv: str | None = None) -> nn.Cell:
    """An untrained network as `description` says (its class count and options)."""
    options = dict(description.get("options", {}))
    if group_conv is not None:
        options["group_conv"] = group_conv
    return create_model(description["model"], num_classes=description["num_classes"], **options)


def load_network(
    ckpt: str | os.PathLike,
    model: str | None = None,
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[nn.Cell, dict[str, Any]]:
    """Read a checkpoint, rebuild its network in inference mode and load it strictly.

    Returns the network and its description (see `describe_checkpoint`).
    """
    params = read_checkpoint(ckpt)
    description = describe_checkpoint(params, model, num_classes, options, source=str(ckpt))
    net = build_network(description)
    load_weights(net, params, source=str(ckpt))
    net.set_train(False)
    return net, description


def _classes_in(params: dict[str, Any]) -> int:
    if "classifier.weight" not in params:
        raise CheckpointError("the checkpoint has no classifier.weight; pass --num-classes")
    return int(params["classifier.weight"].shape[0])
