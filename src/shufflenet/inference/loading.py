"""Rebuild a network from a checkpoint: from its stored description, or recognised from its shapes.

Checkpoints written by this project carry a `ModelDescription`; foreign ones (the MindSpore
tutorial's, the model zoo's) do not, so each registered family looks at the parameter names and
shapes, which pin the model exactly, and the model's registered defaults fill in the rest.
Foreign checkpoints with other names (mindcv 0.3.0's) are converted in memory by their lineage
(`shufflenet.lineages`) as they are read, so every command loads them as `shufflenet convert`
would have written them.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import mindspore as ms
from mindspore import nn

from ..lineages import identify
from ..models import ModelDescription, build_network, describe_checkpoint
from ..utils.checkpoint import load_weights, read_checkpoint
from ..utils.checkpoint_schema import META_KEY


def load_network(
    ckpt: str | os.PathLike,
    model: str | None = None,
    num_classes: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[nn.Cell, ModelDescription]:
    """Read a checkpoint, rebuild its network in inference mode and load it strictly."""
    params = read_weights(ckpt)
    description = describe_checkpoint(params, model, num_classes, options, source=str(ckpt))
    net = build_network(description)
    load_weights(net, params, source=str(ckpt))
    net.set_train(False)
    return net, description


def read_weights(ckpt: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's entries under this project's names, ready for `load_weights`.

    Our own checkpoints and those with our names come back as read. A file of a lineage with
    other names (mindcv 0.3.0) is converted here, once, by the same code as `shufflenet
    convert`, and its description is added under `META_KEY`, so evaluation, export, predict and
    `--pretrained` all treat it as the converted file.
    """
    params = read_checkpoint(ckpt)
    lineage = identify(params)
    if lineage is None or not lineage.renames:
        return params
    state = {key: value.asnumpy() for key, value in params.items() if hasattr(value, "asnumpy")}
    converted, description = lineage.convert(state, str(ckpt), {})
    return {**{key: ms.Tensor(value) for key, value in converted.items()}, META_KEY: description.to_json()}

