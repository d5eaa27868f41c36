"""Top-1, top-5 and loss of a .ckpt, .mindir or .onnx over every sample of a validation set."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data import PipelineSpec, create_dataset, explained_pipeline_errors, get_preprocessing, open_source
from ..engine.context import setup_context
from ..engine.evaluator import all_reduce_sum, evaluate
from ..inference.formats import SUFFIXES
from ..inference.sidecar import sidecar_path
from ..utils.files import write_text
from .common import (
    add_config_flags,
    add_model_flags,
    add_weights_flags,
    given_options,
    run_command,
    weights_checkpoint,
)

PROG = "eval.py"
#: The `Config` fields that say which data to score and where; the same flags as train.py's.
DATA_FLAGS = ["dataset", "data_path", "image_size", "preprocessing", "batch_size", "num_workers",
              "skip_bad_images", "device_target", "distributed"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="MindSpore checkpoint (this project's, the tutorial's, the zoo's)")
    source.add_argument("--mindir", help="exported .mindir or .onnx (its sidecar JSON next to it)")
    add_weights_flags(source, parser)
    parser.add_argument("--trust-unverified-export", action="store_true",
                        help="with --mindir: load a file whose sidecar records no SHA-256, unchecked")
    add_model_flags(parser, class_names=False)
    add_config_flags(parser, DATA_FLAGS, layered=False)
    parser.add_argument("--output", help="JSON file for the results (default: next to the model)")
    return parser


def run(args: argparse.Namespace) -> dict:
    from ..inference import open_model

    if args.weights:
        output = result_path(Path(f"{args.model}.{args.weights}.ckpt"), args.output)
        model_file = Path(weights_checkpoint(args))
    else:
        model_file = Path(args.ckpt or args.mindir)
        if not model_file.is_file():
            raise ValueError(f"{model_file} does not exist; check --ckpt/--mindir")
        output = result_path(model_file, args.output)
    source = open_source(args.dataset, args.data_path, "val", args.skip_bad_images)
    ranks = setup_context(args.device_target, args.distributed)
    predictor = open_model(model_file, args.model, args.num_classes, given_options(args),
                           trust_unverified=args.trust_unverified_export)
    description = predictor.description
    if args.mindir and args.image_size not in (None, description.image_size):
        raise ValueError(f"{model_file} was exported for {description.image_size}px inputs; drop "
                         "--image-size or re-export it at the size you need")
    if description.num_classes != len(source.class_names):
        raise ValueError(f"{model_file} predicts {description.num_classes} classes but the dataset has "
                         f"{len(source.class_names)}; evaluate on the dataset it was trained for")
    preprocessing = get_preprocessing(args.preprocessing) if args.preprocessing else predictor.preprocessing
    spec = PipelineSpec(False, args.batch_size, args.image_size or description.image_size, preprocessing,
                        ranks.size, ranks.rank, num_workers=args.num_workers)
    dataset, info = create_dataset(source, spec)
    with explained_pipeline_errors():
        result = evaluate(predictor, dataset, all_reduce_sum if ranks.size > 1 else None)
    result = {"model_file": str(model_file), "dataset": info.kind, "image_size": info.image_size, **result,
              **published_scores(args)}
    if ranks.is_main:  # the score first: a failing write must not lose it
        published = (f" (published: top-1 {result['published_top1']:g} %, "
                     f"top-5 {result['published_top5']:g} %)"
                     if result.get("published_top1") is not None else "")
        print(f"{model_file.name}: top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} "
              f"loss {result['loss']:.4f} on {result['samples']} {info.kind} images{published} -> {output}",
              flush=True)
        write_text(output, json.dumps(result, indent=1) + "\n")
    return result


def published_scores(args: argparse.Namespace) -> dict:
    """What the publisher reports for `--weights`, to read beside the measured scores."""
    if not args.weights:
        return {}
    from ..pretrained import find_entry, weight_table

    entry = find_entry(args.model, args.weights, weight_table(args.weights_table))
    return {"weights": entry.name, "published_top1": entry.top1, "published_top5": entry.top5}


def result_path(model_file: Path, output: str | None) -> Path:
    """Where the JSON goes; never over an input, and into a folder that exists."""
    path = Path(output) if output else model_file.with_suffix(".eval.json")
    inputs = {model_file.resolve(), sidecar_path(model_file).resolve()}
    if path.resolve() in inputs or path.suffix.lower() in SUFFIXES.values():
        raise ValueError(f"--output {path} would overwrite a model file; name a .json file")
    if not path.parent.is_dir():
        raise ValueError(f"--output {path}: the folder {path.parent} does not exist")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: run(args) and None)
