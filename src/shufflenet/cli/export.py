"""Export a checkpoint to MINDIR, AIR or ONNX, verified against the checkpoint network.

The model name, classes, options and preprocessing come from the checkpoint's stored
description; a foreign checkpoint (tutorial, model zoo) is recognised from its shapes and gets
its model's registered defaults unless flags say otherwise. MINDIR and ONNX exports have each
BatchNorm folded into its convolution (`--fold-bn false` keeps them). `--features-only` exports
the backbone instead: one output per map of `--out-indices` (default: every tap point of
`shufflenet.models.feature_info`), each verified, their names, channels and reductions in the
sidecar.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.config import DEVICES
from ..export import DYNAMIC_BATCH, FORMATS, check_export_request, export_model
from .common import (
    add_flag,
    add_model_flags,
    add_weights_flags,
    describe_overrides,
    given_options,
    run_command,
    weights_checkpoint,
)

PROG = "shufflenet export"


def batch_size_arg(text: str) -> int:
    """`--batch-size`: a positive integer, or 0 / "dynamic" for a MINDIR taking any batch."""
    if text.lower() == "dynamic":
        return DYNAMIC_BATCH
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, 0 or 'dynamic', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from ..data import PRESETS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="MindSpore checkpoint (.ckpt)")
    add_weights_flags(source, parser)
    add_model_flags(parser)
    parser.add_argument("--preprocessing", choices=tuple(PRESETS),
                        help="input convention (default: recorded)")
    parser.add_argument("--format", default="MINDIR", type=str.upper, choices=FORMATS)
    parser.add_argument("--batch-size", type=batch_size_arg, default=1,
                        help="fixed input batch, or 0 / 'dynamic' for any batch (MINDIR only); default 1")
    parser.add_argument("--image-size", type=int, help="input side (default: recorded)")
    parser.add_argument("--file-name", help="output path; the extension is added (default: next to the ckpt; "
                        "with --weights MODEL.TAG in the current folder)")
    add_flag(parser, "fold_bn", bool, "fold BatchNorm into the convolutions (default: for MINDIR; "
             "onnxruntime fuses them itself)", default=None)
    parser.add_argument("--features-only", action="store_true",
                        help="export the backbone: its feature maps, not the logits")
    parser.add_argument("--out-indices", type=int, nargs="+",
                        help="which tap points a --features-only export returns (default: all)")
    parser.add_argument("--device-target", choices=DEVICES, help="MindSpore backend (default: MindSpore's)")
    return parser


def run(args: argparse.Namespace) -> None:
    from ..engine.context import setup_context
    from ..inference import load_network, read_sidecar

    setup_context(args.device_target)
    check_export_request(args.format, args.batch_size, args.image_size)
    if args.out_indices and not args.features_only:
        raise ValueError("--out-indices selects a backbone's maps: pass --features-only with it")
    ckpt = weights_checkpoint(args) if args.weights else args.ckpt
    net, description = load_network(ckpt, args.model, args.num_classes, given_options(args))
    description = describe_overrides(description, args)
    default_name = f"{args.model}.{args.weights}" if args.weights else str(Path(ckpt).with_suffix(""))
    file_name = args.file_name or default_name
    out_indices = tuple(args.out_indices) if args.out_indices else None
    path = export_model(net, args.format, file_name, args.batch_size, description, args.fold_bn,
                        features_only=args.features_only, out_indices=out_indices)
    sidecar = read_sidecar(path)
    verification = sidecar["verification"]
    checked = (f"verified: max |difference| {verification['max_abs_diff']:.3g} "
               f"(relative {verification['max_relative_diff']:.3g})"
               if verification.get("verified") else f"NOT verified: {verification.get('reason')}")
    folded = ", BatchNorm folded" if verification["batchnorm_folded"] else ""
    maps = f", {len(sidecar['outputs'])} maps" if args.features_only else ""
    print(f"exported {path} ({args.format}{folded}{maps}, {checked}); sidecar {path}.json")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: run(args))
