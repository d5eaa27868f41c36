"""List the published weights of every model, fill the cache, or chart top-1 against MFLOPs.

  shufflenet weights [--model NAME] [--json] [--plot FILE]
  shufflenet weights download MODEL [TAG]      (TAG default: the model's default weights)
  shufflenet weights download --all

The table is the built-in one (each publisher's files, read from its own code) plus the entries
of a YAML file named by --weights-table or SHUFFLENET_WEIGHTS_FILE. `*` marks each model's
default (`pretrained=True`): the best published top-1 among direct downloads.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..models import list_models, model_entry
from ..pretrained import cache_paths, default_tag, fetch_checkpoint, find_entry, is_cached, weight_table
from ..utils.files import atomic_path
from .common import add_weights_table_flag, run_command

PROG = "shufflenet weights"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list_models(), metavar="NAME", help="only this model's entries")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--plot", metavar="FILE",
                        help="draw published top-1 against measured MFLOPs (PNG, SVG, PDF)")
    add_weights_table_flag(parser)
    return parser


def build_download_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} download", description="fill the weights cache")
    parser.add_argument("model", nargs="?", choices=list_models(), metavar="MODEL")
    parser.add_argument("tag", nargs="?", default="default",
                        help="weights tag (default: the model's default)")
    parser.add_argument("--all", action="store_true", help="every entry that downloads directly")
    add_weights_table_flag(parser)
    return parser


def table_rows(table: dict, model: str | None = None) -> list[dict]:
    """One row per entry (in the table's order), with whether it is cached and is the default."""
    defaults = {}
    rows = []
    for (name, tag), entry in table.items():
        if model and name != model:
            continue
        if name not in defaults:
            defaults[name] = _default_or_none(name, table)
        source = cache_paths(entry).source
        rows.append({"model": name, "tag": tag, "publisher": entry.publisher, "url": entry.url,
                     "file_name": entry.source_name, "top1": entry.top1, "top5": entry.top5,
                     "check": entry.check, "cached": is_cached(entry),
                     "size_mb": round(source.stat().st_size / 2**20, 1) if source.is_file() else None,
                     "default": defaults[name] == tag, "page": entry.page, "licence": entry.licence,
                     "evaluation": entry.evaluation, "declared_in": entry.declared_in})
    return sorted(rows, key=lambda row: (row["model"], -(row["top1"] or 0.0)))


def _default_or_none(model: str, table: dict) -> str | None:
    try:
        return default_tag(model, table)
    except ValueError:  # only manual downloads
        return None


def format_table(rows: list[dict], cache: bool = True) -> str:
    """Markdown; `cache`: with this machine's columns (file size, cached), as the README is not."""
    local = ["size MB", "cached"] if cache else []
    header = ["model", "tag", "publisher", "top-1", "top-5", "check", *local]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['model']}`", row["tag"] + (" *" if row["default"] else ""), row["publisher"],
                 _number(row["top1"]), _number(row["top5"]),
                 row["check"] if row["url"] else "manual download"]
        if cache:
            cells += [_number(row["size_mb"]), "yes" if row["cached"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def plot(rows: list[dict], path: str) -> None:
    """Published top-1 against MFLOPs measured from each network, one colour per family."""
    import matplotlib
    from matplotlib.figure import Figure

    from .summary import summary_rows

    scored = [row for row in rows if row["top1"] is not None]
    if not scored:
        raise ValueError("no entry states a top-1 to plot")
    mflops = {r["model"]: r["mflops"] for r in summary_rows(names=sorted({row["model"] for row in scored}))}
    figure = Figure(figsize=(9, 6))
    axes = figure.subplots()
    families = sorted({model_entry(row["model"]).family for row in scored})
    colours = dict(zip(families, matplotlib.colormaps["tab10"].colors))
    for family in families:
        points = [row for row in scored if model_entry(row["model"]).family == family]
        axes.scatter([mflops[row["model"]] for row in points], [row["top1"] for row in points],
                     color=colours[family], label=family)
        for row in points:
            axes.annotate(f"{row['model']} ({row['tag']})", (mflops[row["model"]], row["top1"]), fontsize=6,
                          xytext=(3, 2), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel("MFLOPs (multiply-adds, measured at each model's input size)")
    axes.set_ylabel("published ImageNet top-1 (%)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=150, bbox_inches="tight")


def download(args: argparse.Namespace) -> None:
    table = weight_table(args.weights_table)
    if args.all == bool(args.model):
        raise ValueError("name a MODEL (and optionally a TAG), or pass --all")
    entries = ([entry for entry in table.values() if entry.direct] if args.all
               else [find_entry(args.model, args.tag, table)])
    for entry in entries:
        print(f"{entry.name}: {fetch_checkpoint(entry)}", flush=True)


def show(args: argparse.Namespace) -> None:
    rows = table_rows(weight_table(args.weights_table), args.model)
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    else:
        print(json.dumps(rows, indent=1) if args.json else format_table(rows))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "download":
        args = build_download_parser().parse_args(argv[1:])
        return run_command(f"{PROG} download", lambda: download(args))
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: show(args))
