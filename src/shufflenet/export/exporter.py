"""Export a network to MINDIR, AIR or ONNX, prove the file computes what the network does, and
write a sidecar JSON that says how to feed it.

Every export is reloaded right after it is written (`ms.load` + `nn.GraphCell` for MINDIR,
onnxruntime for ONNX) and run on a probe batch of preprocessed random pixels; outputs that
differ from the source network beyond a tight tolerance delete the file and raise. The graph is
exported from a copy of the network built with per-group convolutions (`group_conv="split"`),
the only form Ascend runs, so a MINDIR exported on a CPU deploys on Ascend.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ..data.presets import Preprocessing, eval_resize, get_preprocessing
from ..utils.checkpoint import load_weights, model_description
from .loading import build_network, model_for_channels
from .portable_pools import portable_pools

FORMATS = ("MINDIR", "AIR", "ONNX")
EXTENSIONS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
#: `batch_size` that exports a MINDIR taking any batch.
DYNAMIC_BATCH = 0
#: Batch sizes a dynamic-batch export is verified at.
DYNAMIC_PROBE_BATCHES = (1, 3)
#: Largest accepted |exported - network|, relative to the largest |logit| (at least 1).
DEFAULT_TOLERANCE = 1e-5


class ExportVerificationError(RuntimeError):
    """An exported file does not reproduce the network it was exported from."""


def check_export_request(fmt: str, batch_size: int, image_size: int) -> str:
    """Refuse what cannot be exported here, before any work; returns the upper-case format."""
    fmt = str(fmt).upper()
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    target = ms.get_context("device_target")
    if fmt == "AIR" and target != "Ascend":
        raise ValueError(
            f"AIR export needs the Ascend backend (this MindSpore runs on {target}); "
            "export MINDIR or ONNX here, or run the export on an Ascend machine"
        )
    if not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"--batch-size must be a positive integer or 0 (dynamic), got {batch_size!r}")
    if batch_size == DYNAMIC_BATCH and fmt != "MINDIR":
        raise ValueError(f"a dynamic batch (--batch-size 0) exports only to MINDIR, not {fmt}; "
                         "give a fixed --batch-size")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"--image-size must be an integer of at least 32, got {image_size!r}")
    return fmt


def export_path(file_name: str | os.PathLike, fmt: str) -> Path:
    """`file_name` with the format's extension (added unless already there)."""
    path = Path(file_name)
    extension = EXTENSIONS[fmt]
    return path if path.suffix.lower() == extension else path.with_name(path.name + extension)


def sidecar_path(exported: str | os.PathLike) -> Path:
    """Where the description of an exported file lives: `net.mindir` -> `net.mindir.json`."""
    exported = Path(exported)
    return exported.with_name(exported.name + ".json")


def describe_network(net: nn.Cell, preprocessing: str = "imagenet", image_size: int = 224) -> dict[str, Any]:
    """A `model_description` of a `ShuffleNetV1` read off the network itself."""
    name = model_for_channels(net.groups, net.channels)
    if name is None:
        raise ValueError(f"no registered model has groups={net.groups} and channels {net.channels}")
    options = {"pool_padding": net.pool_padding, "classifier_bias": net.classifier_bias}
    return model_description(name, net.classifier.weight.shape[0], options, preprocessing,
                             image_size=image_size)


def probe_batch(batch: int, image_size: int, preprocessing: Preprocessing, seed: int = 0) -> np.ndarray:
    """Random 0..255 pixels, preprocessed as the network's inputs are: realistic magnitudes."""
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype(np.float32)
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(0, 3, 1, 2))


def run_exported(path: str | os.PathLike, fmt: str, inputs: np.ndarray) -> np.ndarray | None:
    """Outputs of an exported file for `inputs`; None when no runtime for it is installed."""
    if fmt == "MINDIR":
        return nn.GraphCell(ms.load(str(path)))(Tensor(inputs)).asnumpy()
    if fmt == "ONNX":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return None


def verify_export(
    net: nn.Cell,
    path: str | os.PathLike,
    fmt: str,
    batch_sizes: tuple[int, ...],
    image_size: int,
    preprocessing: Preprocessing,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Compare the exported file with `net` on probe batches; raise beyond `tolerance`.

    Returns what was measured (recorded in the sidecar). An AIR file is checked through a
    MINDIR of the same graph, as MindSpore cannot load AIR.
    """
    diffs, relative = [], []
    for seed, batch in enumerate(batch_sizes):
        inputs = probe_batch(batch, image_size, preprocessing, seed)
        expected = net(Tensor(inputs)).asnumpy()
        actual = run_exported(path, fmt, inputs)
        if actual is None:
            warnings.warn(f"{path} was not verified: install onnxruntime to run ONNX files", stacklevel=2)
            return {"verified": False, "reason": "onnxruntime is not installed"}
        if actual.shape != expected.shape:
            raise ExportVerificationError(
                f"{path} returns shape {actual.shape} for a batch of {batch}; "
                f"the network gives {expected.shape}"
            )
        diff = float(np.abs(actual - expected).max())
        limit = tolerance * max(1.0, float(np.abs(expected).max()))
        if not diff <= limit:
            raise ExportVerificationError(
                f"{path} differs from the network by {diff:.3g} (allowed {limit:.3g}) on a probe batch "
                f"of {batch}; the file was deleted. Report this with the model name and format"
            )
        diffs.append(diff)
        relative.append(diff / max(float(np.abs(expected).max()), 1e-30))
    return {"verified": True, "probe_batch_sizes": list(batch_sizes), "max_abs_diff": max(diffs),
            "max_relative_diff": max(relative), "tolerance": tolerance,
            "runtime": "onnxruntime" if fmt == "ONNX" else "mindspore"}


def export_model(
    net: nn.Cell,
    fmt: str,
    file_name: str | os.PathLike,
    batch_size: int = 1,
    image_size: int = 224,
    description: dict[str, Any] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Path:
    """Export `net` (with its current weights), verify the file, write its sidecar; return its path.

    Args:
        net: a ShuffleNetV1 (training or inference mode; it is restored afterwards).
        fmt: "MINDIR", "AIR" (Ascend only) or "ONNX".
        file_name: output path; the format's extension is added when missing.
        batch_size: fixed batch of the exported input, or 0 (`DYNAMIC_BATCH`, MINDIR only).
        image_size: input height and width.
        description: a `model_description` (model name, classes, options, preprocessing,
            class names); read off `net` with ImageNet preprocessing when None.
        tolerance: largest accepted difference, relative to the largest logit.
    """
    fmt = check_export_request(fmt, batch_size, image_size)
    description = dict(description or describe_network(net, image_size=image_size))
    description["image_size"] = image_size
    preprocessing = get_preprocessing(description["preprocessing"])
    path = export_path(file_name, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)

    graph = build_network(description, group_conv="split")
    load_weights(graph, {p.name: p for p in net.get_parameters()}, source="the network")
    graph.set_train(False)
    shape = [None if batch_size == DYNAMIC_BATCH else batch_size, 3, image_size, image_size]
    spec = Tensor(shape=shape, dtype=ms.float32) if batch_size == DYNAMIC_BATCH else Tensor(
        np.zeros(shape, np.float32))
    batches = DYNAMIC_PROBE_BATCHES if batch_size == DYNAMIC_BATCH else (batch_size,)
    with tempfile.TemporaryDirectory() as scratch:
        checked, checked_fmt = path, fmt
        with portable_pools(graph):
            ms.export(graph, spec, file_name=str(path)[: -len(EXTENSIONS[fmt])], file_format=fmt)
            if fmt == "AIR":  # MindSpore cannot load AIR: check a MINDIR of the same graph instead
                checked, checked_fmt = Path(scratch) / "twin.mindir", "MINDIR"
                ms.export(graph, spec, file_name=str(checked)[: -len(".mindir")], file_format="MINDIR")
        was_training = net.training
        net.set_train(False)
        try:
            verification = verify_export(net, checked, checked_fmt, batches, image_size, preprocessing,
                                         tolerance)
        except ExportVerificationError:
            path.unlink(missing_ok=True)
            raise
        finally:
            net.set_train(was_training)
    write_sidecar(path, export_sidecar(description, fmt, path, shape, verification))
    return path


def export_sidecar(
    description: dict[str, Any], fmt: str, path: Path, input_shape: list, verification: dict[str, Any]
) -> dict[str, Any]:
    """Everything needed to feed the exported file: input shape, preprocessing, class names."""
    name = description["preprocessing"]
    preprocessing = get_preprocessing(name)
    return {
        "file": path.name,
        "format": fmt,
        "model": description["model"],
        "num_classes": description["num_classes"],
        "options": description.get("options", {}),
        "image_size": description["image_size"],
        "input_shape": input_shape,
        "input_dtype": "float32",
        "input_layout": "NCHW",
        "preprocessing": {
            "name": name,
            "channel_order": "BGR" if preprocessing.bgr else "RGB",
            "pixel_range": "0..255",
            "resize_shorter_side": eval_resize(description["image_size"], preprocessing),
            **preprocessing.to_dict(),
        },
        "class_names": description["class_names"],
        "verification": verification,
        "mindspore_version": ms.__version__,
    }


def write_sidecar(exported: str | os.PathLike, data: dict[str, Any]) -> Path:
    path = sidecar_path(exported)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


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
    missing = [key for key in ("image_size", "preprocessing", "class_names") if key not in data]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; re-export the model")
    return data


def sidecar_preprocessing(sidecar: dict[str, Any]) -> Preprocessing:
    """The `Preprocessing` recorded in a sidecar (self-contained: presets may change later)."""
    recorded = sidecar["preprocessing"]
    return Preprocessing(tuple(recorded["mean"]), tuple(recorded["std"]), bool(recorded["bgr"]),
                         float(recorded["eval_crop"]))

