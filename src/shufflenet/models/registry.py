"""A strict name -> model registry: duplicates are refused, unknown names and options explained."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from mindspore import nn

_MODELS: dict[str, tuple[Callable[..., nn.Cell], dict[str, Any]]] = {}


def register_model(name: str, builder: Callable[..., nn.Cell], **arch: Any) -> None:
    """Register `builder(**arch, num_classes=..., **options)` under `name`."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = (builder, arch)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> list[str]:
    """The options `create_model(name, ...)` accepts besides `num_classes`."""
    builder, arch = _lookup(name)
    params = inspect.signature(builder).parameters
    return [p for p in params if p not in arch and p not in ("self", "num_classes")]


def model_arch(name: str) -> dict[str, Any]:
    """The fixed architecture arguments of a registered model, e.g. groups and width."""
    return dict(_lookup(name)[1])


def create_model(name: str, num_classes: int = 1000, **options: Any) -> nn.Cell:
    """Build a registered model; see `list_models()` for names and `model_options()` for options."""
    builder, arch = _lookup(name)
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {name}; valid options: {model_options(name)}"
        )
    return builder(**arch, num_classes=num_classes, **options)


def _lookup(name: str) -> tuple[Callable[..., nn.Cell], dict[str, Any]]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name]
