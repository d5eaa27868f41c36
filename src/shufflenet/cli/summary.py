"""Print every registered model with its channels, parameters and multiply-adds."""
from __future__ import annotations

import argparse
import json

from ..models import create_model, list_models, model_arch
from ..models.shufflenet_v1 import PUBLISHED_MFLOPS
from ..utils.complexity import count_macs, count_params


def summary_rows(image_size: int = 224, num_classes: int = 1000) -> list[dict]:
    """One row per registered model, measured on the built network (bias-free classifier)."""
    rows = []
    for name in list_models():
        net = create_model(name, num_classes=num_classes, classifier_bias=False)
        arch = model_arch(name)
        published = PUBLISHED_MFLOPS.get((arch["groups"], arch["width"]))
        mflops = count_macs(net, image_size) / 1e6
        rows.append({
            "model": name,
            "groups": arch["groups"],
            "width": arch["width"],
            "channels": list(net.channels),
            "params": count_params(net),
            "mflops": round(mflops, 1),
            "published_mflops": published[0] if published else None,
            "published_source": published[1] if published else None,
        })
    return rows


def format_markdown(rows: list[dict], image_size: int) -> str:
    lines = [
        f"| model | g | width | channels (stem, stages 2-4) | params | MFLOPs @{image_size} "
        "| published MFLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        published = (
            f"{r['published_mflops']} ({r['published_source']}, "
            f"{100 * (r['mflops'] / r['published_mflops'] - 1):+.1f} %)"
            if r["published_mflops"] and image_size == 224 else ""
        )
        lines.append(
            f"| `{r['model']}` | {r['groups']} | {r['width']:g}x | "
            f"{', '.join(map(str, r['channels']))} | {r['params']:,} | {r['mflops']:.1f} | {published} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shufflenet summary", description=__doc__)
    parser.add_argument("--image-size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    if args.image_size < 32:
        parser.error(f"--image-size must be at least 32, got {args.image_size}")
    rows = summary_rows(args.image_size, args.num_classes)
    print(json.dumps(rows, indent=1) if args.json else format_markdown(rows, args.image_size))
    return 0
