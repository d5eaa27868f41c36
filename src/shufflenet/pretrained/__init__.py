"""Published weights by name: `create_model(name, pretrained=True | "TAG")`, and a tag wherever a
checkpoint path is taken (`train.py --pretrained`, `--weights` on eval, export and predict).

The table (`table.py`, `published.yaml`) says where each publisher's file is and how it is
checked; the cache (`cache.py`) downloads, checks and converts it once; `convert.py` is the
conversion `shufflenet convert` runs, with its comparison against the publisher's network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mindspore import nn

from ..models import build_backbone, check_features_request, describe_checkpoint, head_prefix
from ..models import create_model as build_model
from ..utils.checkpoint import load_weights, read_checkpoint
from .cache import HOME_ENV, cache_paths, fetch_checkpoint, is_cached, weights_home
from .convert import MAX_RELATIVE_DIFF, import_weights
from .download import MIRROR_ENV, OFFLINE_ENV
from .table import TABLE_ENV, WeightEntry, default_tag, find_entry, read_entries, weight_table

#: Suffixes that make a `--pretrained`/`--weights` value a path even if no such file exists.
_PATH_SUFFIXES = (".ckpt", ".pth", ".tar", ".pt", ".bin", ".safetensors")


def fetch_weights(model: str | None, tag: str | bool = True, table_file: str | os.PathLike | None = None,
                  progress: bool = True) -> Path:
    """The cached checkpoint of `model`'s weights `tag` (True: the model's default)."""
    if model is None:  # a command given a tag and no --model
        raise ValueError(f"weights {tag!r} name a table entry of a model: pass --model NAME with them "
                         "(see `shufflenet weights`), or a checkpoint path")
    return fetch_checkpoint(find_entry(model, tag, weight_table(table_file)), progress=progress)


def is_weights_tag(value: str) -> bool:
    """Whether a `--pretrained`/`--weights` value names a table entry rather than a file."""
    looks_like_path = "/" in value or os.sep in value or value.lower().endswith(_PATH_SUFFIXES)
    return not (looks_like_path or Path(value).exists())


def resolve_weights(value: str, model: str | None, table_file: str | os.PathLike | None = None) -> Path:
    """A checkpoint path from a path or a tag of `model`'s published weights."""
    if not is_weights_tag(value):
        return Path(value)
    return fetch_weights(model, value, table_file)


def create_model(name: str, pretrained: bool | str = False, num_classes: int | None = None,
                 table_file: str | os.PathLike | None = None, features_only: bool = False,
                 out_indices: tuple[int, ...] | None = None, **options: Any) -> nn.Cell:
    """Build a registered model, with published weights if `pretrained` (True: the default
    ones; a tag: those). A `num_classes` other than the weights' re-initialises the classifier,
    as timm does; `options` override the network options the weights were converted with.
    `features_only`: the backbone (`models.create_model`), the weights loaded strictly into
    every cell it builds; the checkpoint's head and deeper cells are not built, so not read."""
    if not pretrained:
        return build_model(name, num_classes, features_only=features_only, out_indices=out_indices, **options)
    if features_only:
        check_features_request(name, num_classes, out_indices, options)
    path = fetch_weights(name, pretrained, table_file)
    params = read_checkpoint(path)
    if features_only:
        description = describe_checkpoint(params, name, source=str(path))
        backbone = build_backbone(name, out_indices, **{**description.options, **options})
        load_weights(backbone, params, source=str(path))
        return backbone
    description = describe_checkpoint(params, name, num_classes, source=str(path))
    net = build_model(name, description.num_classes, **{**description.options, **options})
    load_weights(net, params, new_head=head_prefix(name), source=str(path))
    return net


__all__ = ["HOME_ENV", "MAX_RELATIVE_DIFF", "MIRROR_ENV", "OFFLINE_ENV", "TABLE_ENV", "WeightEntry",
           "cache_paths", "create_model", "default_tag", "fetch_checkpoint", "fetch_weights", "find_entry",
           "import_weights", "is_cached", "is_weights_tag", "read_entries", "resolve_weights", "weight_table",
           "weights_home"]
