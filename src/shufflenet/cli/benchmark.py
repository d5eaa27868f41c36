"""`shufflenet benchmark`: training and inference throughput of this project against PyTorch eager,
side by side (the library is `shufflenet.bench`, whose docstring says what is measured)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from ..bench import (
    FAST_ISA,
    MAIN_WORKLOAD,
    QUICK_WORKLOADS,
    WORKLOADS,
    forward_macs,
    machine_description,
    measure_gemm,
    run_workload,
    summarise,
    worker_env,
    workload_contenders,
)
from ..utils.cpu import usable_cpus
from ..utils.files import write_text
from ..utils.optional import MissingDependency, import_torch


def format_markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, {machine['threads']} "
        f"threads for both frameworks; MindSpore {machine['mindspore']} with the CPU fast path (oneDNN "
        f"capped at {FAST_ISA}) unless a row says otherwise, PyTorch {machine['torch']} as installed; "
        f"fp32 GEMM {machine['gemm_gflops']:.0f} GFLOP/s; load average "
        f"{machine['load_average_start'][0]:.1f} at start, {machine['load_average_end'][0]:.1f} at end.",
        "",
        "| workload | contender | images/s | vs PyTorch | cores busy | first step s | peak RSS MB "
        "| GFLOP/s | of GEMM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spec = r["spec"]
        workload = (f"{spec['mode']} {spec['model'].replace('shufflenet_v1_', '')} "
                    f"{spec['image_size']}px b{spec['batch']}")
        if r.get("error"):
            lines.append(f"| {workload} | {r['contender']} | failed: {r['error'][:80]} | | | | | | |")
            continue
        ratio = f"{r['vs_pytorch']:.2f}x" if r.get("vs_pytorch") is not None else ""
        lines.append(
            f"| {workload} | {r['contender']} | {r['images_per_s']:.1f} | {ratio} | {r['cores_busy']:.1f} | "
            f"{r['first_step_s']:.1f} | {r['peak_rss_mb']:,} | {r['gflops']:.1f} | "
            f"{100 * r['gemm_share']:.0f} % |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shufflenet benchmark",
                                     description="training and inference images/s against PyTorch eager")
    parser.add_argument("--quick", action="store_true",
                        help="two small workloads, 2 rounds, no variants (a few minutes)")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="only workloads of these models (default: "
                        + "; ".join(f"{m} {s}px b{b} {mode}" for m, s, b, mode in WORKLOADS) + ")")
    parser.add_argument("--modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default 4; 2 with --quick)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per contender per round")
    parser.add_argument("--threads", type=int, default=usable_cpus(),
                        help="threads for both frameworks (default: the CPUs this process may use)")
    parser.add_argument("--no-variants", action="store_true",
                        help="skip the variants tried (no fast path, split GroupConv, pools, jit, ...)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 4
    for name in ("rounds", "steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json {args.json}: its folder does not exist")
    return args


def selected_workloads(args: argparse.Namespace) -> list[tuple[str, int, int, str]]:
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    if args.models:
        from ..models import list_models

        unknown = sorted(set(args.models) - set(list_models()))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; see `shufflenet summary`")
        workloads = [w for w in WORKLOADS if w[0] in args.models] or [
            (m, *rest) for m in args.models for rest in ((224, 16, "train"), (224, 16, "infer"))]
    return [w for w in workloads if w[3] in args.modes]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import_torch("the benchmark (its peer)")  # only to fail early and clearly
    except MissingDependency as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        workloads = selected_workloads(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    machine = machine_description(args.threads)
    results, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shufflenet-bench-") as log_dir:
        machine["gemm_gflops"] = measure_gemm(worker_env("default"), args.threads, log_dir)
        macs = {}
        for model, size, batch, mode in workloads:
            variants = not (args.quick or args.no_variants) and (model, size, batch) == MAIN_WORKLOAD
            contenders = workload_contenders(model, size, batch, mode, args.threads, variants)
            print(f"[{time.perf_counter() - started:5.0f} s] {mode} {model} {size}px b{batch}: "
                  f"{', '.join(contenders)}", file=sys.stderr, flush=True)
            if (model, size) not in macs:
                macs[model, size] = forward_macs(model, size)
            results.extend((result, macs[model, size]) for result in
                           run_workload(contenders, args.rounds, args.steps, log_dir))
        # The machine's rate is the better of two measurements, one before and one after.
        machine["gemm_gflops_end"] = measure_gemm(worker_env("default"), args.threads, log_dir)
    machine["load_average_end"] = list(os.getloadavg())
    machine["wall_s"] = round(time.perf_counter() - started)
    machine["gemm_gflops"] = max(machine["gemm_gflops"], machine.pop("gemm_gflops_end"))
    rows = [summarise(result, image_macs, machine["gemm_gflops"]) for result, image_macs in results]
    command = "shufflenet benchmark " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command.strip(), "machine": machine, "results": rows}
    print(format_markdown(rows, machine))
    print("\n```json\n" + json.dumps(report, indent=1) + "\n```")
    if args.json:  # atomically: a link planted at the name is replaced, never written through
        write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0 if not any(r.get("error") for r in rows) else 1
