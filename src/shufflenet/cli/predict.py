"""Classify image files with an exported model (.mindir, .onnx) or a checkpoint (.ckpt).

Images are preprocessed as the model's sidecar JSON (exported files) or stored description
(checkpoints) records, and the top classes are printed with their probabilities. A file that
is not an image, or one too large to decode safely (`data.images.MAX_PIXELS`), is reported
on stderr in one line and skipped, and the others are still classified; the exit status is
then 1. Names and paths are printed with control characters escaped.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..data.images import list_images, load_image
from ..data.pipeline import preprocess_image
from ..models.description import MAX_CLASS_NAME, printable
from .common import (
    add_model_flags,
    add_weights_flags,
    describe_overrides,
    given_options,
    run_command,
    weights_checkpoint,
)

PROG = "shufflenet predict"


def classify(predictor, files: list[Path], top_k: int, batch_size: int) -> Iterator[tuple[Path, object]]:
    """(file, [(class name, probability), ...]) per image, or (file, ValueError) when unreadable."""
    description = predictor.description
    batch: list[tuple[Path, np.ndarray]] = []
    for index, file in enumerate(files):
        try:
            pixels = preprocess_image(load_image(file), description.image_size, predictor.preprocessing)
            batch.append((file, pixels))
        except ValueError as err:
            yield file, err
        if batch and (len(batch) == batch_size or index == len(files) - 1):
            probabilities = softmax(predictor(np.stack([pixels for _, pixels in batch])))
            for (path, _), probs in zip(batch, probabilities):
                best = np.argsort(-probs)[:top_k]
                yield path, [(description.class_names[i], float(probs[i])) for i in best]
            batch = []


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def build_parser() -> argparse.ArgumentParser:
    from ..data import PRESETS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="the model file (.mindir or .onnx with its .json sidecar, or .ckpt), then image "
                             "files or folders (searched recursively); with --weights, images only")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--image-size", type=int, help="checkpoints only: input side (default: recorded)")
    parser.add_argument("--preprocessing", choices=tuple(PRESETS),
                        help="checkpoints only: input convention (default: recorded)")
    parser.add_argument("--trust-unverified-export", action="store_true",
                        help="exported files only: load one whose sidecar records no SHA-256 "
                        "(written before export recorded it), unchecked")
    add_model_flags(parser)
    add_weights_flags(parser, parser)
    return parser


def open_predictor(model_file: Path, args: argparse.Namespace):
    """The model, with checkpoint-only flags applied (and refused for exported files)."""
    from ..engine.context import setup_context
    from ..inference import open_model

    overrides = [flag for flag, value in (("--image-size", args.image_size),
                                          ("--preprocessing", args.preprocessing)) if value]
    if overrides and model_file.suffix.lower() != ".ckpt":
        raise ValueError(f"{', '.join(overrides)} apply to checkpoints; {model_file.name} is used as "
                         "exported (its sidecar records all of that)")
    setup_context()
    predictor = open_model(model_file, args.model, args.num_classes, given_options(args),
                           trust_unverified=args.trust_unverified_export)
    predictor.description = describe_overrides(predictor.description, args)
    if predictor.network is not None:  # a checkpoint: its input follows the description
        predictor.preprocessing = predictor.description.preset
    return predictor


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1 or args.batch_size < 1:
        raise ValueError("--top-k and --batch-size must be positive")
    model_file, images = (None, args.paths) if args.weights else (Path(args.paths[0]), args.paths[1:])
    if model_file is not None and not model_file.is_file():
        raise ValueError(f"model file {model_file} does not exist")
    if not images:
        raise ValueError("name image files or folders after the model file")
    files = list_images(images)
    if not files:
        raise ValueError(f"no files found in {', '.join(images)}")
    model_file = model_file or Path(weights_checkpoint(args))
    predictor = open_predictor(model_file, args)
    skipped = 0
    top_k = min(args.top_k, predictor.description.num_classes)
    for file, result in classify(predictor, files, top_k, args.batch_size):
        if isinstance(result, ValueError):
            print(f"{PROG}: {printable(result, 400)}; skipped", file=sys.stderr, flush=True)
            skipped += 1
            continue
        print(printable(file, 400))
        for rank, (name, prob) in enumerate(result, 1):
            print(f"  {rank}. {printable(name, MAX_CLASS_NAME):<24} {prob:.4f}")
    return 1 if skipped else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: run(args))
