"""Print every registered model with its architecture, parameters and multiply-adds."""
from __future__ import annotations

import argparse
import json

from mindspore import nn

from ..engine.context import pynative_mode
from ..models import create_model, family_of, list_families, list_models, model_entry
from ..models.complexity import count_macs, count_params


def summary_rows(image_size: int | None = None, num_classes: int = 1000,
                 names: list[str] | None = None) -> list[dict]:
    """One row per registered model, measured on the network its published figures describe
    (the family's `published_options`, e.g. Megvii's bias-free classifier) at `image_size` (None:
    each model's registered input size, where the published figures apply); `names`: only these."""
    rows = []
    for name in names or list_models():
        net = create_model(name, num_classes=num_classes, **family_of(name).published_options)
        entry = model_entry(name)
        size = image_size or entry.image_size
        published = entry.published_mflops if size == entry.image_size else None
        rows.append({
            "model": name,
            "family": entry.family,
            "image_size": size,
            "arch": family_of(name).arch_text(net),
            "params": count_params(net),
            "mflops": round(_macs(net, size) / 1e6, 1),
            "published_mflops": published[0] if published else None,
            "published_source": published[1] if published else None,
        })
    return rows


def _macs(net: nn.Cell, size: int) -> int:
    with pynative_mode():  # count_macs's forward hooks fire only there
        return count_macs(net, size)


def format_markdown(rows: list[dict]) -> str:
    lines = [
        "| model | architecture | params | input | MFLOPs | published MFLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        published = (
            f"{r['published_mflops']} ({r['published_source']}, "
            f"{100 * (r['mflops'] / r['published_mflops'] - 1):+.1f} %)" if r["published_mflops"] else ""
        )
        lines.append(f"| `{r['model']}` | {r['arch']} | {r['params']:,} | {r['image_size']} | "
                     f"{r['mflops']:.1f} | {published} |")
    return "\n".join(lines)


def family_rows() -> list[dict]:
    """Per family: its models, the publishers whose weights load by name, and the publishers
    whose files `shufflenet convert` imports (from the registry, weight table and lineages)."""
    from ..lineages import LINEAGES
    from ..pretrained import weight_table

    table = weight_table()
    rows = []
    for family in list_families():
        models = list_models(family)
        by_name: dict[str, int] = {}
        for (model, _), entry in table.items():
            if model in models:
                by_name[entry.publisher] = by_name.get(entry.publisher, 0) + 1
        rows.append({"family": family, "models": models, "weights_by_name": by_name,
                     "imports": sorted({lineage.origin for lineage in LINEAGES if lineage.family == family})})
    return rows


def format_families(rows: list[dict]) -> str:
    lines = ["| family | models | weights by name (files per publisher) | imports files of |",
             "|---|---|---|---|"]
    for row in rows:
        models = row["models"]
        shown = f"`{models[0]}`" if len(models) == 1 else f"{len(models)}: `{models[0]}` ... `{models[-1]}`"
        weights = ", ".join(f"{name} {count}" for name, count in sorted(row["weights_by_name"].items()))
        lines.append(f"| {row['family']} | {shown} | {weights} | {', '.join(row['imports'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shufflenet summary", description=__doc__)
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: each model's)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--families", action="store_true",
                        help="one row per family: its models, weights by name and importable publishers")
    args = parser.parse_args(argv)
    if args.families:
        print(json.dumps(family_rows(), indent=1) if args.json else format_families(family_rows()))
        return 0
    if args.image_size is not None and args.image_size < 32:
        parser.error(f"--image-size must be at least 32, got {args.image_size}")
    rows = summary_rows(args.image_size, args.num_classes)
    print(json.dumps(rows, indent=1) if args.json else format_markdown(rows))
    return 0
