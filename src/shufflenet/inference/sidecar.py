"""The JSON written next to every exported model: what it is, how to feed it, how it was checked.

`net.mindir` -> `net.mindir.json`. It holds the model's `ModelDescription` fields at the top
level, the input shape, the preprocessing spelled out in numbers (so a deployment needs no copy
of this package's presets), the export's verification, and the exported file's size and SHA-256,
which every command checks before it loads the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..data.presets import Preprocessing, eval_resize
from ..models import ModelDescription
from ..utils.files import sha256_file, write_text


def sidecar_path(exported: str | os.PathLike) -> Path:
    exported = Path(exported)
    return exported.with_name(exported.name + ".json")


def make_sidecar(description: ModelDescription, fmt: str, path: Path, input_shape: list,
                 verification: dict[str, Any], mindspore_version: str) -> dict[str, Any]:
    preset = description.preset
    fields = description.to_dict()
    return {
        "file": path.name,
        "format": fmt,
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        **{key: fields[key] for key in ("model", "num_classes", "options", "image_size")},
        "input_shape": input_shape,
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "preprocessing": {
            "name": description.preprocessing,
            "channel_order": "BGR" if preset.bgr else "RGB",
            "pixel_range": "0..255",
            "resize_shorter_side": eval_resize(description.image_size, preset),
            **preset.to_dict(),
        },
        "class_names": fields["class_names"],
        "verification": verification,
        "mindspore_version": mindspore_version,
    }


def write_sidecar(exported: str | os.PathLike, data: dict[str, Any]) -> Path:
    return write_text(sidecar_path(exported), json.dumps(data, indent=1) + "\n")


def read_sidecar(exported: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an exported file; a ValueError naming the file when missing or damaged."""
    path = sidecar_path(exported)
    if not path.is_file():
        raise ValueError(f"{path} not found: an exported model needs the sidecar JSON written "
                         "next to it by export.py; re-export, or copy it along with the model")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-export the model") from None
    missing = [key for key in ("model", "image_size", "preprocessing", "class_names", "input_shape")
               if key not in data]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; re-export the model")
    check_exported_file(exported, data)
    return data


def check_exported_file(exported: str | os.PathLike, sidecar: dict[str, Any]) -> None:
    """The exported file must be the one its sidecar describes: same size, same SHA-256.

    Sidecars written before these were recorded are accepted unchecked.
    """
    exported = Path(exported)
    size, digest = sidecar.get("size_bytes"), sidecar.get("sha256")
    if size is None or digest is None:
        return
    actual = exported.stat().st_size
    if actual != size:
        raise ValueError(f"{exported} has {actual} bytes but was exported with {size}: it is truncated "
                         "or was replaced; re-export it or copy it again")
    if sha256_file(exported) != digest:
        raise ValueError(f"{exported} does not match the SHA-256 its sidecar records: the file is "
                         "damaged or was replaced; re-export it or copy it again")


def sidecar_description(sidecar: dict[str, Any], source: str) -> ModelDescription:
    fields = {**sidecar, "preprocessing": sidecar["preprocessing"]["name"],
              "num_classes": len(sidecar["class_names"])}
    return ModelDescription.from_dict(fields, source)


def sidecar_preprocessing(sidecar: dict[str, Any]) -> Preprocessing:
    """The preprocessing recorded in numbers (self-contained: presets may change later)."""
    recorded = sidecar["preprocessing"]
    return Preprocessing(tuple(recorded["mean"]), tuple(recorded["std"]), bool(recorded["bgr"]),
                         float(recorded["eval_crop"]), str(recorded.get("eval_geometry", "mindspore")))
