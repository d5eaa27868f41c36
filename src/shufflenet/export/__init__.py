"""Export to MINDIR/AIR/ONNX with verification, and import of other lineages' weights."""
from .convert import compare_with_megvii, convert_megvii, import_mindspore_checkpoint
from .exporter import (
    DYNAMIC_BATCH,
    FORMATS,
    ExportVerificationError,
    export_model,
    read_sidecar,
    sidecar_path,
    verify_export,
)
from .loading import describe_checkpoint, infer_model, load_network

__all__ = [
    "DYNAMIC_BATCH", "FORMATS", "ExportVerificationError", "compare_with_megvii", "convert_megvii",
    "describe_checkpoint", "export_model", "import_mindspore_checkpoint", "infer_model", "load_network",
    "read_sidecar", "sidecar_path", "verify_export",
]
