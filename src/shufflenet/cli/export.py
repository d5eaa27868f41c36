"""Export a checkpoint to MINDIR, AIR or ONNX, verified against the checkpoint network.

The model name, classes, options and preprocessing come from the checkpoint's stored
description; a foreign checkpoint (tutorial, model zoo) is recognised from its shapes and
assumed to use 'same' pools and ImageNet preprocessing unless flags say otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.config import DEVICES
from ..engine.context import setup_context
from ..export.exporter import (
    DYNAMIC_BATCH,
    FORMATS,
    ExportVerificationError,
    check_export_request,
    export_model,
)
from ..models.shufflenet_v1 import POOL_PADDINGS


def batch_size_arg(text: str) -> int:
    """`--batch-size`: a positive integer, or 0 / "dynamic" for a MINDIR taking any batch."""
    if text.lower() == "dynamic":
        return DYNAMIC_BATCH
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, 0 or 'dynamic', got {text!r}") from None


def read_class_names(path: str | None) -> list[str] | None:
    """Class names from a text file, one per line (blank lines ignored)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--class-names file {file} does not exist")
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that rebuild a network from a checkpoint (shared by export and predict)."""
    parser.add_argument("--model", help="registered model name (default: from the checkpoint)")
    parser.add_argument("--num-classes", type=int, help="classifier outputs (default: from the checkpoint)")
    parser.add_argument("--pool-padding", choices=POOL_PADDINGS,
                        help="pools of the checkpoint's lineage (default: from the checkpoint, else 'same')")
    parser.add_argument("--classifier-bias", action=argparse.BooleanOptionalAction, default=None,
                        help="whether the classifier has a bias (default: from the checkpoint)")
    parser.add_argument("--preprocessing",
                        help="preset of shufflenet.data.presets (default: from the checkpoint)")
    parser.add_argument("--class-names", help="text file with one class name per line")


def model_overrides(args: argparse.Namespace) -> dict:
    """Network options given on the command line."""
    options = {}
    if args.pool_padding is not None:
        options["pool_padding"] = args.pool_padding
    if args.classifier_bias is not None:
        options["classifier_bias"] = args.classifier_bias
    return options


def apply_description_flags(description: dict, args: argparse.Namespace) -> dict:
    """`--preprocessing` and `--class-names` override the checkpoint's description."""
    from ..data.presets import get_preprocessing

    if args.preprocessing is not None:
        get_preprocessing(args.preprocessing)
        description["preprocessing"] = args.preprocessing
    names = read_class_names(args.class_names)
    if names is not None:
        if len(names) != description["num_classes"]:
            raise ValueError(f"--class-names has {len(names)} names for a "
                             f"{description['num_classes']}-class model")
        description["class_names"] = names
    return description


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shufflenet export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="MindSpore checkpoint (.ckpt)")
    add_model_arguments(parser)
    parser.add_argument("--format", default="MINDIR", type=str.upper, choices=FORMATS)
    parser.add_argument("--batch-size", type=batch_size_arg, default=1,
                        help="fixed input batch, or 0 / 'dynamic' for any batch (MINDIR only); default 1")
    parser.add_argument("--image-size", type=int, help="input side (default: from the checkpoint, else 224)")
    parser.add_argument("--file-name", help="output path; the extension is added (default: next to the ckpt)")
    parser.add_argument("--device-target", choices=DEVICES,
                        help="MindSpore backend (default: MindSpore's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_context(args.device_target)
        check_export_request(args.format, args.batch_size, args.image_size or 224)
        from ..export.loading import load_network

        net, description = load_network(args.ckpt, args.model, args.num_classes, model_overrides(args))
        description = apply_description_flags(description, args)
        image_size = args.image_size or description.get("image_size", 224)
        file_name = args.file_name or str(Path(args.ckpt).with_suffix(""))
        path = export_model(net, args.format, file_name, args.batch_size, image_size, description)
    except (ValueError, ExportVerificationError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 1
    from ..export.exporter import read_sidecar

    verification = read_sidecar(path)["verification"]
    checked = (f"verified: max |difference| {verification['max_abs_diff']:.3g} "
               f"(relative {verification['max_relative_diff']:.3g})"
               if verification.get("verified") else f"NOT verified: {verification.get('reason')}")
    print(f"exported {path} ({args.format}, {checked}); sidecar {path}.json")
    return 0
