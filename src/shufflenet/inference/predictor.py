"""One way to get logits from any model file: a network, a checkpoint, a MINDIR or an ONNX file.

A `Predictor` takes batches of preprocessed images (N, 3, H, W float32 numpy) and returns their
logits. A file exported with a fixed batch is fed in chunks of that size, the last one padded, and a
network's short batch is padded to the largest it was fed (one compiled graph), here and
nowhere else. Evaluation, `predict`, the benchmark and export verification all run
models through this module.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from mindspore import nn

from ..data.presets import Preprocessing
from ..models import ModelDescription
from .formats import file_format
from .loading import load_network
from .sidecar import read_exported, read_sidecar, sidecar_description, sidecar_path, sidecar_preprocessing

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Predictor:
    """A model ready to score images: how to run it, how to feed it, what its outputs mean."""

    run: Runner
    description: ModelDescription
    preprocessing: Preprocessing
    fixed_batch: Optional[int] = None  # exported with a fixed batch: inputs are padded to it
    network: Optional[nn.Cell] = None  # for checkpoints and in-memory networks
    #: The largest batch a network was fed: a graph-mode network compiles a graph per input
    #: shape, so a smaller batch (an evaluation's last) is padded to it and reuses that graph.
    largest_batch: int = field(default=0, repr=False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, np.float32)
        batch = self.fixed_batch
        if batch is None and self.network is not None:
            self.largest_batch = batch = max(self.largest_batch, len(images))
        if batch is None or len(images) == batch:
            return self.run(images)
        chunks = []
        for start in range(0, len(images), batch):
            part = images[start:start + batch]
            padded = np.zeros((batch, *images.shape[1:]), np.float32)
            padded[:len(part)] = part
            chunks.append(self.run(padded)[:len(part)])
        return np.concatenate(chunks)


def network_runner(net: nn.Cell) -> Runner:
    import mindspore as ms

    return lambda images: net(ms.Tensor(images)).asnumpy()


def network_outputs_runner(net: nn.Cell) -> Callable[[np.ndarray], list[np.ndarray]]:
    """Every output of `net` (a tensor or a tuple of them) as numpy arrays."""
    import mindspore as ms

    def run(images: np.ndarray) -> list[np.ndarray]:
        outputs = net(ms.Tensor(images))
        return [out.asnumpy() for out in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]
    return run


def exported_runner(path: str | os.PathLike, fmt: str, threads: int = 0, data: bytes | None = None) -> Runner:
    """Run a MINDIR through `nn.GraphCell` or an ONNX file through onnxruntime (`threads`
    intra-op threads; 0: onnxruntime's default, one per physical core): its first output.

    `data`: the file's bytes, already checked against its sidecar (else read here once). The
    runtime loads these bytes, never the path again, so what was checked is what runs.
    """
    run = exported_outputs_runner(path, fmt, threads, data)
    return lambda images: run(images)[0]


def exported_outputs_runner(path: str | os.PathLike, fmt: str, threads: int = 0,
                            data: bytes | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """As `exported_runner`, every output in order (a backbone's maps)."""
    if fmt not in ("MINDIR", "ONNX"):
        raise ValueError(f"{path}: no runtime here for {fmt} files")
    data = Path(path).read_bytes() if data is None else data
    if fmt == "MINDIR":
        return network_outputs_runner(nn.GraphCell(_load_mindir(data, path)))
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(f"running {path} needs onnxruntime: pip install onnxruntime") from None
    try:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
        raise ValueError(f"{path} is not an ONNX model onnxruntime can load ({_first_line(err)}); "
                         "re-export it") from None
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})


def _load_mindir(data: bytes, path: str | os.PathLike):
    """A MINDIR graph from `data`: `ms.load` reads only a path, so it gets a private copy in a
    fresh 0700 folder (no other user can swap it), removed once loaded."""
    import mindspore as ms

    folder = tempfile.mkdtemp(prefix="shufflenet-mindir-")
    try:
        copy = os.path.join(folder, "model.mindir")
        with open(copy, "xb") as handle:
            handle.write(data)
        return ms.load(copy)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path} is not a MINDIR MindSpore {ms.__version__} can load "
                         f"({_first_line(err)}); re-export it") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_exported(path: str | os.PathLike, fmt: str, inputs: np.ndarray) -> np.ndarray:
    """Outputs of an exported file for one batch (as exported, no padding)."""
    return exported_runner(path, fmt)(np.ascontiguousarray(inputs, np.float32))


def run_exported_outputs(path: str | os.PathLike, fmt: str, inputs: np.ndarray) -> list[np.ndarray]:
    """Every output of an exported file for one batch (a backbone's maps), in order."""
    return exported_outputs_runner(path, fmt)(np.ascontiguousarray(inputs, np.float32))


def from_network(net: nn.Cell, description: ModelDescription) -> Predictor:
    net.set_train(False)
    return Predictor(network_runner(net), description, description.preset, network=net)


def open_checkpoint(path: str | os.PathLike, model: str | None = None, num_classes: int | None = None,
                    options: Mapping[str, Any] | None = None) -> Predictor:
    net, description = load_network(path, model, num_classes, options)
    return from_network(net, description)


def open_export(path: str | os.PathLike, threads: int = 0, trust_unverified: bool = False) -> Predictor:
    """A `.mindir` or `.onnx` file, fed as its sidecar says (`threads`: onnxruntime's).

    The sidecar is read and bounded first, then the file's bytes are checked against it and
    loaded (`trust_unverified`: accept a sidecar that records no SHA-256).
    """
    fmt = file_format(path)
    sidecar = read_sidecar(path)
    if sidecar.get("features_only"):
        raise ValueError(f"{path} is a backbone export (--features-only): it gives feature maps, not "
                         "class scores; predict and evaluate with an export of the classifier")
    description = sidecar_description(sidecar, str(sidecar_path(path)))
    preprocessing = sidecar_preprocessing(sidecar)
    fixed = sidecar["input_shape"][0]
    data = read_exported(path, sidecar, trust_unverified)
    return Predictor(exported_runner(path, fmt, threads, data), description, preprocessing,
                     int(fixed) if fixed else None)


def open_model(path: str | os.PathLike, model: str | None = None, num_classes: int | None = None,
               options: Mapping[str, Any] | None = None, trust_unverified: bool = False) -> Predictor:
    """A checkpoint (the arguments may override its description) or an exported file
    (`trust_unverified`: see `open_export`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    if file_format(path) == "CKPT":
        return open_checkpoint(path, model, num_classes, options)
    given = [flag for flag, value in (("--model", model), ("--num-classes", num_classes)) if value]
    given += [f"--{key.replace('_', '-')}" for key in options or {}]
    if given:
        raise ValueError(f"{', '.join(given)} apply to checkpoints; {path.name} is used as exported "
                         "(its sidecar records all of that)")
    return open_export(path, trust_unverified=trust_unverified)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


