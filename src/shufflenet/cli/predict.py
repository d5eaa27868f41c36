"""Classify image files with an exported model (.mindir, .onnx) or a checkpoint (.ckpt).

Images are preprocessed as the model's sidecar JSON (exported files) or stored description
(checkpoints) records, and the top classes are printed with their probabilities. A file that
is not an image is reported on stderr and skipped; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.images import list_images, load_image, preprocess_image
from ..data.presets import Preprocessing
from .export import add_model_arguments, apply_description_flags, model_overrides

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class LoadedModel:
    """A model ready to classify: how to run it and how to feed it."""

    run: Runner
    image_size: int
    preprocessing: Preprocessing
    class_names: list[str]
    batch_size: int  # inputs are padded to this many images


def load_exported(path: Path, batch_size: int) -> LoadedModel:
    """A `.mindir` or `.onnx` file and its sidecar."""
    from ..export.exporter import read_sidecar, run_exported, sidecar_preprocessing

    sidecar = read_sidecar(path)
    fmt = "ONNX" if path.suffix.lower() == ".onnx" else "MINDIR"
    fixed = sidecar.get("input_shape", [None])[0]
    if fmt == "MINDIR":
        import mindspore as ms
        from mindspore import nn

        cell = nn.GraphCell(ms.load(str(path)))
        run = lambda x: cell(ms.Tensor(x)).asnumpy()
    else:
        run = lambda x: _require(run_exported(path, fmt, x), "install onnxruntime to run ONNX files")
    return LoadedModel(run, int(sidecar["image_size"]), sidecar_preprocessing(sidecar),
                       list(sidecar["class_names"]), int(fixed) if fixed else batch_size)


def load_checkpoint_model(path: Path, args: argparse.Namespace) -> LoadedModel:
    """A `.ckpt`, rebuilt from its description (or from the model flags)."""
    import mindspore as ms

    from ..data.presets import get_preprocessing
    from ..export.loading import load_network

    net, description = load_network(path, args.model, args.num_classes, model_overrides(args))
    description = apply_description_flags(description, args)
    run = lambda x: net(ms.Tensor(x)).asnumpy()
    return LoadedModel(run, args.image_size or int(description.get("image_size", 224)),
                       get_preprocessing(description["preprocessing"]), description["class_names"],
                       args.batch_size)


def classify(model: LoadedModel, files: list[Path], top_k: int) -> Iterator[tuple[Path, object]]:
    """(file, [(class name, probability), ...]) per image, or (file, ValueError) when unreadable."""
    batch: list[tuple[Path, np.ndarray]] = []
    for index, file in enumerate(files):
        try:
            batch.append((file, preprocess_image(load_image(file), model.image_size, model.preprocessing)))
        except ValueError as err:
            yield file, err
        if batch and (len(batch) == model.batch_size or index == len(files) - 1):
            yield from _run_batch(model, batch, top_k)
            batch = []


def _run_batch(model: LoadedModel, batch: list, top_k: int) -> Iterator[tuple[Path, list]]:
    inputs = np.zeros((model.batch_size, 3, model.image_size, model.image_size), np.float32)
    inputs[: len(batch)] = np.stack([pixels for _, pixels in batch])
    probabilities = softmax(model.run(inputs)[: len(batch)])
    for (file, _), probs in zip(batch, probabilities):
        best = np.argsort(-probs)[:top_k]
        yield file, [(model.class_names[i], float(probs[i])) for i in best]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shufflenet predict", description=__doc__)
    parser.add_argument("model_file", help=".mindir or .onnx (with its .json sidecar), or .ckpt")
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass (a fixed-batch export uses its own)")
    parser.add_argument("--image-size", type=int, help="checkpoints only: input side (default: recorded)")
    add_model_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.top_k < 1 or args.batch_size < 1:
            raise ValueError("--top-k and --batch-size must be positive")
        model_file = Path(args.model_file)
        if not model_file.is_file():
            raise ValueError(f"model file {model_file} does not exist")
        files = list_images(args.images)
        if not files:
            raise ValueError(f"no files found in {', '.join(args.images)}")
        from ..engine.context import setup_context

        setup_context()
        if model_file.suffix.lower() == ".ckpt":
            model = load_checkpoint_model(model_file, args)
        elif model_file.suffix.lower() in (".mindir", ".onnx"):
            given = [f"--{k.replace('_', '-')}" for k in ("model", "num_classes", "pool_padding",
                                                          "classifier_bias", "image_size")
                     if getattr(args, k, None) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to checkpoints; {model_file.name} is "
                                 "used as exported (its sidecar records all of that)")
            model = load_exported(model_file, args.batch_size)
        else:
            raise ValueError(f"{model_file}: expected a .mindir, .onnx or .ckpt file")
        skipped = 0
        for file, result in classify(model, files, min(args.top_k, len(model.class_names))):
            if isinstance(result, ValueError):
                print(f"predict: {result}; skipped", file=sys.stderr)
                skipped += 1
                continue
            print(file)
            for rank, (name, prob) in enumerate(result, 1):
                print(f"  {rank}. {name:<24} {prob:.4f}")
    except ValueError as err:
        print(f"predict: error: {err}", file=sys.stderr)
        return 1
    return 1 if skipped else 0


def _require(value, message: str):
    if value is None:
        raise ValueError(message)
    return value
