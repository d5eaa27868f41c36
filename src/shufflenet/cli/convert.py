"""Import published weights as a checkpoint of the matching model of this project.

  megvii:      Megvii's PyTorch release (.pth.tar, read with torch.load(weights_only=True));
               symmetric pools, no classifier bias (V2: Megvii's unit layout), BGR 0..255
               input; logits compared with Megvii's network rebuilt in PyTorch.
  torchvision: torchvision's state dict (.pth, read the same way); for ShuffleNetV2
               torchvision's unit layout, symmetric pools, a classifier bias; ImageNet input;
               logits compared with torchvision's network rebuilt in PyTorch.
  timm:        timm's weights (pytorch_model.bin or model.safetensors); ImageNet input; logits
               compared with timm's network rebuilt in PyTorch.
  mindcv:      a mindcv checkpoint (.ckpt): ShuffleNetV1 0.3.0's native grouped convs (its
               published shufflenet_v1_g3_05/g3_10 files) are split into per-group convs;
               main's convs.{k} files and the other families' keep their names; ImageNet input.
  mindspore:   a MindSpore tutorial or model zoo checkpoint (.ckpt); the model is recognised
               from its shapes and re-saved with its description.

Optimizer state, step counters and EMA copies are dropped. A PyTorch file (.pth, .pth.tar, .pt,
.bin, .safetensors) is matched against every PyTorch publisher's names, a .ckpt against
every MindSpore publisher's, so --source is needed only to insist on one.

An existing DST is replaced only with --overwrite, and never when it is SRC itself (or a link to
it); the checkpoint is written and compared in a scratch folder beside DST and moved over it
only once the comparison passed.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .common import add_option_flags, given_options, read_class_names, run_command

PROG = "shufflenet convert"
def build_parser() -> argparse.ArgumentParser:
    from ..lineages import ORIGINS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__ + publishers_table(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help=f"published weights of {', '.join(ORIGINS)} (.pth, .pth.tar, .pt, "
                        ".bin, .safetensors or .ckpt)")
    parser.add_argument("dst", help="output MindSpore checkpoint (.ckpt)")
    parser.add_argument("--overwrite", action="store_true", help="replace dst if it exists (never src)")
    parser.add_argument("--source", choices=ORIGINS,
                        help="publisher of src (default: recognised from its extension and names)")
    parser.add_argument("--model", help="expected model name (default: recognised from the weights)")
    add_option_flags(parser, layered=False)
    parser.add_argument("--class-names", help="text file with one class name per line")
    parser.add_argument("--check-size", type=int, default=224,
                        help="image side of the comparison with the publisher's PyTorch network (0 skips it)")
    return parser


def publishers_table() -> str:
    """Each publisher and the families it covers, from the lineage table (never behind it)."""
    from ..lineages import LINEAGES, ORIGINS

    families = {origin: dict.fromkeys(x.family for x in LINEAGES if x.origin == origin) for origin in ORIGINS}
    rows = [f"  {origin + ':':<13}{', '.join(names)}" for origin, names in families.items()]
    return "\nPublishers and the families read from each:\n" + "\n".join(rows) + "\n"


def check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse, before reading anything, a DST that is SRC (also through a link) or, without
    --overwrite, any existing file."""
    if not src.is_file():
        raise ValueError(f"{src} does not exist")
    if dst.suffix != ".ckpt":
        raise ValueError(f"the output {dst} must end in .ckpt")
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise ValueError(f"{dst} is the input {src} itself; choose another output path (even "
                         "--overwrite never writes over the input)")
    if os.path.lexists(dst) and not overwrite:
        raise ValueError(f"{dst} already exists; pass --overwrite to replace it, or choose another "
                         "output path")


def run(args: argparse.Namespace) -> None:
    src, dst = Path(args.src), Path(args.dst)
    check_paths(src, dst, args.overwrite)
    names = read_class_names(args.class_names)
    from ..engine.context import setup_context
    from ..pretrained import import_weights

    setup_context()
    description, lineage = import_weights(src, dst, args.source, args.model, names, given_options(args),
                                          check_size=args.check_size)
    print(f"wrote {dst} from {lineage.origin} weights: {description.model}, "
          f"{description.num_classes} classes, "
          f"options {description.options}, preprocessing {description.preprocessing!r}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: run(args))
