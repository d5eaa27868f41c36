"""The model file formats, each with its one suffix: what export writes and what evaluation,
prediction and the benchmark open, from one table."""
from __future__ import annotations

import os
from pathlib import Path

#: Format -> file suffix. Export's formats, the readers' checks and eval's refusal to write its
#: results over a model file all read this table.
SUFFIXES = {"CKPT": ".ckpt", "MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
#: What a predictor opens: checkpoints and the exported forms with a runtime here (AIR runs only
#: in Ascend's own tools).
READABLE = ("CKPT", "MINDIR", "ONNX")


def file_format(path: str | os.PathLike) -> str:
    """The format of a file a predictor opens, from its suffix."""
    suffix = Path(path).suffix.lower()
    found = next((fmt for fmt in READABLE if SUFFIXES[fmt] == suffix), None)
    if found is None:
        raise ValueError(f"{path}: expected a {', '.join(SUFFIXES[fmt] for fmt in READABLE)} file")
    return found
