"""Import published ShuffleNetV1 weights as a checkpoint of the matching model of this project.

  megvii:    Megvii's PyTorch release (.pth.tar, read with torch.load(weights_only=True));
             the result uses symmetric pools, no classifier bias, BGR 0..255 input, and its
             logits are compared with Megvii's network rebuilt in PyTorch.
  mindspore: a MindSpore tutorial or model zoo checkpoint (.ckpt); the model is recognised
             from its shapes and re-saved with its description, optimizer state dropped.

The source is chosen from the file extension unless --source is given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.shufflenet_v1 import POOL_PADDINGS
from .export import read_class_names

SOURCES = ("megvii", "mindspore")


def guess_source(path: Path) -> str:
    """`mindspore` for .ckpt, `megvii` for PyTorch files (.pth, .pth.tar, .tar, .pt)."""
    if path.suffix.lower() == ".ckpt":
        return "mindspore"
    if path.suffix.lower() in (".pth", ".tar", ".pt"):
        return "megvii"
    raise ValueError(f"cannot tell the lineage of {path} from its extension; pass --source megvii|mindspore")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shufflenet convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="Megvii .pth.tar or MindSpore tutorial/zoo .ckpt")
    parser.add_argument("dst", help="output MindSpore checkpoint (.ckpt)")
    parser.add_argument("--source", choices=SOURCES, help="lineage of src (default: from its extension)")
    parser.add_argument("--model", help="expected model name (default: recognised from the weights)")
    parser.add_argument("--pool-padding", choices=POOL_PADDINGS,
                        help="mindspore source only: pools the weights were trained with "
                             "(default: from the checkpoint, else 'same')")
    parser.add_argument("--class-names", help="text file with one class name per line")
    parser.add_argument("--check-size", type=int, default=224,
                        help="megvii source: image side of the PyTorch comparison (0 skips it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        src, dst = Path(args.src), Path(args.dst)
        if not src.is_file():
            raise ValueError(f"{src} does not exist")
        if dst.suffix != ".ckpt":
            raise ValueError(f"the output {dst} must end in .ckpt")
        if src.resolve() == dst.resolve():
            raise ValueError("src and dst are the same file; choose another output path")
        source = args.source or guess_source(src)
        names = read_class_names(args.class_names)
        from ..engine.context import setup_context

        setup_context()
        from ..export import convert

        if source == "megvii":
            path, description = convert.convert_megvii(src, dst, args.model, names)
        else:
            path, description = convert.import_mindspore_checkpoint(src, dst, args.model, args.pool_padding,
                                                                     names)
        print(f"wrote {path}: {description['model']}, {description['num_classes']} classes, "
              f"options {description['options']}, preprocessing {description['preprocessing']!r}")
        if source == "megvii" and args.check_size:
            diff = convert.compare_with_megvii(path, src, image_size=args.check_size)
            print(f"logits vs Megvii's network in PyTorch at {args.check_size}px: "
                  f"max |difference| {diff['max_abs_diff']:.3g} (relative {diff['max_relative_diff']:.3g})")
            if diff["max_relative_diff"] > 1e-4:
                path.unlink()
                raise ValueError(f"{path} (deleted) differs from the PyTorch network beyond 1e-4 relative; "
                                 "the conversion is wrong, please report it")
    except ValueError as err:
        print(f"convert: error: {err}", file=sys.stderr)
        return 1
    return 0
