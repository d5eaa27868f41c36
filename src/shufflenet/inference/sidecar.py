"""The JSON written next to every exported model: what it is, how to feed it, how it was checked.

`net.mindir` -> `net.mindir.json`. It holds the model's `ModelDescription` fields at the top
level, the input shape, the preprocessing spelled out in numbers (so a deployment needs no copy
of this package's presets), the export's verification, and the exported file's size and SHA-256,
which every command checks before it loads the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..data.presets import EVAL_GEOMETRIES, Preprocessing, eval_resize
from ..models import ModelDescription
from ..models.description import MAX_IN_CHANNELS, MAX_METADATA_BYTES, parse_json, printable
from ..utils.files import commit, recover_leftovers, sha256_file, write_text


def sidecar_path(exported: str | os.PathLike) -> Path:
    """Where the description of an exported file lives: `net.mindir` -> `net.mindir.json`."""
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


def replace_export(written: Path, target: Path) -> None:
    """Move an export and its sidecar, both finished in the scratch folder beside `target`
    (`written` has `target`'s name), over `target` and its sidecar, as a pair: each is checked
    against the other first, and the moves are journaled (`files.commit`), so a kill at any
    moment leaves the old pair or the new one once the folder is next used
    (`finish_interrupted_exports`)."""
    if written.name != target.name or written.parent.parent != target.parent:
        raise ValueError(f"{written} is not an export of {target} in a scratch folder beside it")
    recorded = json.loads(sidecar_path(written).read_text(encoding="utf-8"))
    if (recorded.get("size_bytes"), recorded.get("sha256")) != (written.stat().st_size, sha256_file(written)):
        raise ValueError(f"{sidecar_path(written)} does not describe {written}; nothing was replaced")
    commit(written.parent, [target.name, sidecar_path(target).name])


def finish_interrupted_exports(exported: str | os.PathLike) -> None:
    """What killed exports (and other writes) left beside `exported`: a pair whose replacement
    had begun is finished, the rest removed; only leftovers whose writer is gone are touched.
    A folder this user cannot change is left as it is (reading still works)."""
    try:
        recover_leftovers(Path(exported).parent)
    except OSError:
        pass


#: Largest exported file loaded (bytes): protobuf's 2 GiB limit, which MINDIR and ONNX share.
MAX_EXPORT_BYTES = 2**31 - 1
#: Largest fixed batch a sidecar may record (inputs are padded to it, so it is allocated).
MAX_EXPORT_BATCH = 4096


def read_sidecar(exported: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of an exported file, every field that feeds or labels the model bounded
    (`_check_sidecar`); a ValueError naming the file and the field when missing or damaged.

    The exported file itself is checked where it is loaded (`read_exported`), from the bytes
    that are loaded.
    """
    finish_interrupted_exports(exported)  # a pair a killed export was replacing (write side)
    path = sidecar_path(exported)
    if not path.is_file():
        raise ValueError(f"{path} not found: an exported model needs the sidecar JSON written "
                         "next to it by export.py; re-export, or copy it along with the model")
    data = parse_json(_read_limited(path, MAX_METADATA_BYTES, "a sidecar"), str(path), "sidecar JSON")
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; re-export the model")
    missing = [key for key in ("model", "image_size", "preprocessing", "class_names", "input_shape")
               if key not in data]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; re-export the model")
    _check_sidecar(path, data)
    return data


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    """A file's bytes, refused unread when larger than `limit` (read once, from one handle)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise ValueError(f"{path} has {max(size, len(data))} bytes, more than the {limit} {what} may "
                         "have; it is not a file export.py wrote: re-export the model")
    return data


def _check_sidecar(path: Path, data: dict[str, Any]) -> None:
    """Bounds on what the sidecar sets up before the model runs: the input shape (a fixed batch
    is allocated as given), the preprocessing numbers, the recorded size and digest."""
    shape = data["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 4 and all(_whole(v) for v in shape[1:])
            and (shape[0] is None or _whole(shape[0]) and 1 <= shape[0] <= MAX_EXPORT_BATCH)
            and 1 <= shape[1] <= MAX_IN_CHANNELS and shape[2] == shape[3] == data["image_size"]):
        raise ValueError(f"{path}: input_shape must be [batch (1 to {MAX_EXPORT_BATCH}, or null), "
                         f"channels (1 to {MAX_IN_CHANNELS}), image_size, image_size], got "
                         f"{printable(json.dumps(shape), 80)}; re-export the model")
    recorded = data["preprocessing"]
    if not (isinstance(recorded, dict) and isinstance(recorded.get("name"), str)
            and _triple(recorded.get("mean")) and _triple(recorded.get("std"))
            and all(v > 0 for v in recorded["std"]) and isinstance(recorded.get("bgr"), bool)
            and _finite(recorded.get("eval_crop")) and 0.5 <= recorded["eval_crop"] <= 1.0
            and recorded.get("eval_geometry", EVAL_GEOMETRIES[0]) in EVAL_GEOMETRIES):
        raise ValueError(f"{path}: preprocessing must record name, mean and std (3 finite numbers each, "
                         f"std positive), bgr, eval_crop (0.5 to 1) and eval_geometry "
                         f"({' or '.join(EVAL_GEOMETRIES)}); re-export the model")
    size, digest = data.get("size_bytes"), data.get("sha256")
    if size is not None and not (_whole(size) and 0 < size <= MAX_EXPORT_BYTES):
        raise ValueError(f"{path}: size_bytes must be a byte count up to {MAX_EXPORT_BYTES}, got "
                         f"{printable(repr(size), 40)}; re-export the model")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest)):
        raise ValueError(f"{path}: sha256 must be 64 hex digits, got {printable(repr(digest), 80)}; "
                         "re-export the model")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _triple(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_finite(v) for v in value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_exported(exported: str | os.PathLike, sidecar: dict[str, Any],
                  trust_unverified: bool = False) -> bytes:
    """The exported file's bytes, checked against the size and SHA-256 its sidecar records.

    The bytes hashed are the bytes loaded (they are handed to the runtime, not the path), so
    the file cannot be swapped between check and use. A sidecar without both is refused unless
    `trust_unverified` (the user's explicit `--trust-unverified-export`).
    """
    exported = Path(exported)
    size, digest = sidecar.get("size_bytes"), sidecar.get("sha256")
    if size is None or digest is None:
        if not trust_unverified:
            raise ValueError(f"{sidecar_path(exported)} records no size_bytes and sha256, so nothing shows "
                             f"{exported.name} is the file that was exported and verified; re-export it, "
                             "or pass --trust-unverified-export to load it unchecked")
        print(f"note: {exported} is loaded unchecked (--trust-unverified-export): its sidecar records "
              "no SHA-256", file=sys.stderr, flush=True)
    with open(exported, "rb") as handle:
        actual = os.fstat(handle.fileno()).st_size
        if size is not None and actual != size:
            raise ValueError(f"{exported} has {actual} bytes but was exported with {size}: it is truncated "
                             "or was replaced; re-export it or copy it again")
        if actual > MAX_EXPORT_BYTES:
            raise ValueError(f"{exported} has {actual} bytes, more than the {MAX_EXPORT_BYTES} a MINDIR "
                             "or ONNX file can hold; it is not a file export.py wrote")
        data = handle.read(actual + 1)
    if len(data) != actual:
        raise ValueError(f"{exported} changed while it was read ({actual} bytes, then {len(data)}); "
                         "load it again once nothing writes to it")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{exported} does not match the SHA-256 its sidecar records: the file is "
                         "damaged or was replaced; re-export it or copy it again")
    return data


def sidecar_description(sidecar: dict[str, Any], source: str) -> ModelDescription:
    names = sidecar["class_names"]
    fields = {**sidecar, "preprocessing": sidecar["preprocessing"]["name"],
              "num_classes": len(names) if isinstance(names, list) else names}
    return ModelDescription.from_dict(fields, source)


def sidecar_preprocessing(sidecar: dict[str, Any]) -> Preprocessing:
    """The preprocessing recorded in numbers (self-contained: presets may change later)."""
    recorded = sidecar["preprocessing"]
    return Preprocessing(tuple(recorded["mean"]), tuple(recorded["std"]), bool(recorded["bgr"]),
                         float(recorded["eval_crop"]), str(recorded.get("eval_geometry", "mindspore")))
