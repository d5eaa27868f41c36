"""Models in, logits out: checkpoint loading, exported files and their sidecars."""
from .loading import load_network, read_weights
from .predictor import (
    Predictor,
    from_network,
    open_checkpoint,
    open_export,
    open_model,
    run_exported,
    run_exported_outputs,
)
from .sidecar import read_sidecar, sidecar_path

__all__ = [
    "Predictor", "from_network", "load_network", "open_checkpoint",
    "open_export", "open_model", "read_sidecar", "read_weights", "run_exported", "run_exported_outputs",
    "sidecar_path",
]
