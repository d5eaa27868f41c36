"""PyTorch, an optional dependency, imported only where a feature needs it (publisher
checkpoints, the PyTorch rebuilds, reference comparisons, the benchmark's peer)."""
from __future__ import annotations

from types import ModuleType

TORCH_INSTALL = 'pip install -e ".[torch]"'


class MissingDependency(ImportError, ValueError):
    """An optional package a feature needs is not installed. An ImportError, and a ValueError
    so that every command reports it in one line, with how to install it."""


def import_torch(needed_for: str) -> ModuleType:
    """PyTorch, for `needed_for` (a module or a feature, named in the message)."""
    try:
        import torch
    except ImportError:
        raise MissingDependency(f"{needed_for} needs PyTorch: {TORCH_INSTALL}") from None
    return torch
