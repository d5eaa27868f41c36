"""Export to MINDIR, AIR and ONNX, verified against the network, with a sidecar JSON."""
from .exporter import (
    DYNAMIC_BATCH,
    FORMATS,
    ExportVerificationError,
    check_export_request,
    export_model,
    probe_batch,
    verify_export,
)

__all__ = [
    "DYNAMIC_BATCH", "FORMATS", "ExportVerificationError", "check_export_request", "export_model",
    "probe_batch", "verify_export",
]
