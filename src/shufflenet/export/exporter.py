"""Export a network to MINDIR, AIR or ONNX, prove the file computes what the network does, and
write a sidecar JSON that says how to feed it.

Every export is reloaded right after it is written (`ms.load` + `nn.GraphCell` for MINDIR,
onnxruntime for ONNX) and run on a probe batch of preprocessed random pixels; outputs that
differ from the source network beyond a tight tolerance delete the file and raise. The graph is
exported from a copy of the network rebuilt from its description with Ascend-ready operations
(per-group convolutions, portable pools), so a MINDIR exported on a CPU deploys on Ascend.
MINDIR exports fold each BatchNorm into the convolution before it (1.2x faster inference in
MindSpore on CPU); ONNX exports keep them, since onnxruntime fuses them itself and ran the
unfolded graph faster (1.9-2.4x PyTorch eager against 1.2-1.9x folded: the folded graph adds each
per-group convolution's bias after the concatenation). The check compares with the unfolded
network either way.

The file and its sidecar are written and checked in a private scratch folder beside the target
and replaced together (`sidecar.replace_export`): a kill at any moment leaves the old pair or the
new one, and the next export, run, `predict` or `eval` there finishes or removes what it left.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ..data.presets import Preprocessing, probe_batch
from ..inference import run_exported_outputs
from ..inference.formats import SUFFIXES
from ..inference.sidecar import finish_interrupted_exports, make_sidecar, replace_export, write_sidecar
from ..models import (
    FeatureExtractor,
    ModelDescription,
    build_network,
    check_features_request,
    check_out_indices,
    feature_info,
    features_of,
    model_options,
)
from ..models.fast_ops import fold_batchnorm
from ..utils.checkpoint import load_weights
from ..utils.files import scratch_folder
from .portable_pools import portable_pools

FORMATS = ("MINDIR", "AIR", "ONNX")
#: Formats whose exports have BatchNorm folded by default (Ascend's compiler folds AIR itself).
FOLDED_BY_DEFAULT = ("MINDIR",)
#: `batch_size` that exports a MINDIR taking any batch.
DYNAMIC_BATCH = 0
#: Network options an exported graph is built with where the model has them: the forms Ascend runs.
ASCEND_OPTIONS = {"group_conv": "split"}
#: Batch sizes a dynamic-batch export is verified at.
DYNAMIC_PROBE_BATCHES = (1, 3)
#: Largest accepted |exported - network|, relative to the largest |logit| (at least 1). Rounding
#: alone reaches ~1e-7 (MINDIR) and ~1e-6 (ONNX) on ShuffleNetV1 and V2, but 2.5e-5 on a
#: BatchNorm-folded ShuffleNetV2+ (its squeeze-excitation gates amplify it, ~1e-6 per unit); a
#: wrong graph differs by whole units.
DEFAULT_TOLERANCE = 1e-4


class ExportVerificationError(ValueError):
    """An exported file does not reproduce the network it was exported from."""


def check_export_request(fmt: str, batch_size: int, image_size: int | None = None) -> str:
    """Refuse what cannot be exported here, before any work; returns the upper-case format.
    `image_size` None: the model's own, checked when its description is built."""
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
    if image_size is not None and (not isinstance(image_size, int) or image_size < 32):
        raise ValueError(f"--image-size must be an integer of at least 32, got {image_size!r}")
    return fmt


def export_path(file_name: str | os.PathLike, fmt: str) -> Path:
    """`file_name` with the format's extension (added unless already there)."""
    path = Path(file_name)
    extension = SUFFIXES[fmt]
    return path if path.suffix.lower() == extension else path.with_name(path.name + extension)


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
    probes = probe_batch(max(batch_sizes), image_size, preprocessing, seed=0)
    # One network run (one compiled graph) for every probe size: in inference mode each image's
    # outputs are its own, so a smaller batch's are the first rows.
    network_outputs = _arrays(net(Tensor(probes)))
    for batch in batch_sizes:
        inputs, expected = probes[:batch], [out[:batch] for out in network_outputs]
        try:
            outputs = run_exported_outputs(path, fmt, inputs)
        except ValueError as err:  # no runtime for the format here
            warnings.warn(f"{path} was not verified: {err}", stacklevel=2)
            return {"verified": False, "reason": str(err)}
        if [a.shape for a in outputs] != [e.shape for e in expected]:
            raise ExportVerificationError(
                f"{path} returns shape(s) {[a.shape for a in outputs]} for a batch of {batch}; "
                f"the network gives {[e.shape for e in expected]}"
            )
        for actual, wanted in zip(outputs, expected):  # each map against its own scale
            diff, scale = float(np.abs(actual - wanted).max()), float(np.abs(wanted).max())
            limit = tolerance * max(1.0, scale)
            if not diff <= limit:
                raise ExportVerificationError(
                    f"{Path(path).name} differs from the network by {diff:.3g} (allowed {limit:.3g}) on a "
                    f"probe batch of {batch}; nothing was written. Report this with the model name and format"
                )
            diffs.append(diff)
            relative.append(diff / max(scale, 1e-30))
    return {"verified": True, "probe_batch_sizes": list(batch_sizes), "max_abs_diff": max(diffs),
            "max_relative_diff": max(relative), "tolerance": tolerance,
            "runtime": "onnxruntime" if fmt == "ONNX" else "mindspore"}


def _arrays(outputs: Tensor | tuple[Tensor, ...]) -> list[np.ndarray]:
    """A network's output(s) as a list: one tensor, or a backbone's tuple of maps."""
    return [out.asnumpy() for out in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]


def export_model(
    net: nn.Cell,
    fmt: str,
    file_name: str | os.PathLike,
    batch_size: int,
    description: ModelDescription,
    fold_bn: bool | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> Path:
    """Export `net` (with its current weights), verify the file, write its sidecar; return its path.

    Args:
        net: a registered network (training or inference mode; it is restored afterwards).
        fmt: "MINDIR", "AIR" (Ascend only) or "ONNX".
        file_name: output path; the format's extension is added when missing.
        batch_size: fixed batch of the exported input, or 0 (`DYNAMIC_BATCH`, MINDIR only).
        description: what `net` is; its `image_size` is the exported input side.
        fold_bn: fold BatchNorm into the convolutions (default: for MINDIR).
        tolerance: largest accepted difference, relative to the largest logit (of each map).
        features_only: export the backbone (`net` a full network or its backbone), one output per
            map of `out_indices` (default: the backbone's, else every tap point), each verified.
    """
    fmt = check_export_request(fmt, batch_size, description.image_size)
    fold_bn = fmt in FOLDED_BY_DEFAULT if fold_bn is None else fold_bn
    if features_only:
        net = backbone_of(net, description.model, out_indices)
        out_indices = net.out_indices
    elif out_indices is not None:
        raise ValueError("--out-indices selects a backbone's maps: pass --features-only with it")
    path = export_path(file_name, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    finish_interrupted_exports(path)
    graph = export_graph(net, description, fold_bn, bias_add=fmt != "ONNX", out_indices=out_indices)
    size = description.image_size
    shape = [None if batch_size == DYNAMIC_BATCH else batch_size, 3, size, size]
    spec = Tensor(shape=shape, dtype=ms.float32) if batch_size == DYNAMIC_BATCH else Tensor(
        np.zeros(shape, np.float32))
    batches = DYNAMIC_PROBE_BATCHES if batch_size == DYNAMIC_BATCH else (batch_size,)
    # Written and checked in a scratch folder beside the target (MindSpore's ONNX export chmods
    # the folder it writes to), then moved into place with its sidecar: a failed export leaves
    # nothing behind.
    with scratch_folder(path.parent, path.name) as scratch:
        written = scratch / path.name
        verification = _export_and_verify(net, graph, spec, written, fmt, batches, size, description,
                                          tolerance)
        verification["batchnorm_folded"] = fold_bn
        sidecar = make_sidecar(description, fmt, written, shape, verification, ms.__version__)
        if features_only:
            sidecar.update(features_sidecar(net))
        write_sidecar(written, sidecar)
        replace_export(written, path)
    return path


def _export_and_verify(net: nn.Cell, graph: nn.Cell, spec: Tensor, written: Path, fmt: str,
                       batches: tuple[int, ...], size: int, description: ModelDescription,
                       tolerance: float) -> dict[str, Any]:
    """`graph` exported to `written` and compared with `net` (in inference mode meanwhile)."""
    with portable_pools(graph):
        ms.export(graph, spec, file_name=str(written)[: -len(SUFFIXES[fmt])], file_format=fmt)
        checked, checked_fmt = written, fmt
        if fmt == "AIR":  # MindSpore cannot load AIR: check a MINDIR of the same graph instead
            checked, checked_fmt = written.parent / "twin.mindir", "MINDIR"
            ms.export(graph, spec, file_name=str(checked)[: -len(SUFFIXES["MINDIR"])], file_format="MINDIR")
    was_training = net.training
    net.set_train(False)
    try:
        return verify_export(net, checked, checked_fmt, batches, size, description.preset, tolerance)
    finally:
        net.set_train(was_training)


def export_graph(net: nn.Cell, description: ModelDescription, fold_bn: bool,
                 bias_add: bool = True, out_indices: tuple[int, ...] | None = None) -> nn.Cell:
    """A fresh copy of `net` in inference mode, with per-group convolutions, BN folded if asked:
    rebuilt from its description, so nothing swapped into `net` (`kernels.use_cpu_kernels`) is
    exported. `out_indices`: the backbone of that copy (`net` a backbone or a full network)."""
    ascend_ready = {k: v for k, v in ASCEND_OPTIONS.items() if k in model_options(description.model)}
    graph = build_network(description, **ascend_ready)
    weights = {p.name: p for p in net.get_parameters()}
    built = graph if out_indices is None else features_of(graph, description.model, out_indices)
    load_weights(built, weights, source="the network")  # every cell exported, strictly
    graph.set_train(False)
    if fold_bn:  # on the whole network: folding rebuilds sequences, so cut the backbone after it
        graph = fold_batchnorm(graph, bias_add)
    return graph if out_indices is None else features_of(graph, description.model, out_indices)


def backbone_of(net: nn.Cell, model: str, out_indices: tuple[int, ...] | None) -> FeatureExtractor:
    """`net` itself if it is a backbone (with these `out_indices`), else the backbone cut from it."""
    if isinstance(net, FeatureExtractor):
        wanted = net.out_indices if out_indices is None else check_out_indices(out_indices,
                                                                                len(feature_info(model)))
        if wanted != net.out_indices:
            raise ValueError(f"out_indices {tuple(out_indices)} differ from the backbone's {net.out_indices}")
        return net
    check_features_request(model, None, out_indices, {})
    return features_of(net, model, out_indices)


def features_sidecar(backbone: FeatureExtractor) -> dict[str, Any]:
    """What a features-only export's sidecar adds: each output's name, channels and reduction."""
    return {"features_only": True, "out_indices": list(backbone.out_indices),
            "outputs": [{"index": k, "name": tap.module, "num_chs": tap.num_chs, "reduction": tap.reduction}
                        for k, tap in enumerate(backbone.feature_info)]}
