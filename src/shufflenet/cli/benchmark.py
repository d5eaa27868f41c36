"""Training and inference throughput of this project against PyTorch eager, side by side.

MindSpore runs with this project's CPU fast path (`shufflenet.utils.cpu`: oneDNN capped at AVX2,
one kernel thread per CPU) unless a row says otherwise; PyTorch runs as installed, with the same
thread count. Every contender runs in a worker process of its own (`shufflenet.cli.benchmark_worker`);
the workers of one workload stay alive together and are asked in turn for a few steps per
round, so they see the same machine load. Reported per contender: median images/s, the median
over rounds of its time ratio against PyTorch in the same round, CPU cores kept busy (process
CPU time over wall time), first-step time (graph compile for MindSpore), peak RSS, and achieved
GFLOP/s (2 x multiply-adds per image; training counted as 3 x forward) with its share of the
machine's fp32 GEMM rate measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from ..utils.cpu import ONEDNN_ISA_ENV, usable_cpus
from ..utils.files import write_text
from ..utils.optional import MissingDependency, import_torch

#: (model, image size, batch, mode): the workloads of the full run.
WORKLOADS = (
    ("shufflenet_v1_g3_x1_0", 224, 16, "train"),
    ("shufflenet_v1_g3_x2_0", 224, 16, "train"),
    ("shufflenet_v1_g3_x1_0", 32, 64, "train"),
    ("shufflenet_v1_g3_x1_0", 224, 16, "infer"),
    ("shufflenet_v1_g3_x2_0", 224, 16, "infer"),
    ("shufflenet_v1_g3_x1_0", 32, 64, "infer"),
    ("shufflenet_v1_g3_x1_0", 224, 1, "infer"),
    ("shufflenet_v2_x1_0", 224, 16, "train"),
    ("shufflenet_v2_x1_0", 224, 16, "infer"),
    ("shufflenet_v2_plus_medium", 224, 16, "train"),
    ("shufflenet_v2_plus_medium", 224, 16, "infer"),
    ("mobilenet_v1_100", 224, 16, "train"),
    ("mobilenet_v1_100", 224, 16, "infer"),
    ("mobilenet_v2_100", 224, 16, "train"),
    ("mobilenet_v2_100", 224, 16, "infer"),
    ("squeezenet1_1", 224, 16, "train"),
    ("squeezenet1_1", 224, 16, "infer"),
    ("xception", 299, 8, "train"),
    ("xception", 299, 8, "infer"),
)
#: The workload on which every variant tried runs too.
MAIN_WORKLOAD = ("shufflenet_v1_g3_x1_0", 224, 16)
#: Workloads of `--quick`: a few minutes in all.
QUICK_WORKLOADS = (
    ("shufflenet_v1_g3_x1_0", 32, 64, "train"),
    ("shufflenet_v1_g3_x1_0", 224, 16, "infer"),
)
#: The oneDNN instruction-set cap of this project's CPU fast path (`shufflenet.utils.cpu`).
FAST_ISA = "AVX2"
#: Label -> worker spec of each contender. MindSpore runs with the fast path unless a variant
#: says otherwise, and with this project's C++ kernels (`shufflenet.kernels`, as train.py on
#: CPU) only where the spec says `cpu_kernels`; PyTorch runs as its users run it. `ALWAYS` run
#: on every workload; the other variants (what was tried) run on 1.0x at 224 px, batch 16.
CONTENDERS = {
    "MindSpore graph": {"kind": "mindspore", "cpu_kernels": True},
    "MindSpore graph, MindSpore's kernels": {"kind": "mindspore"},
    "MindSpore MINDIR (GraphCell)": {"kind": "mindir", "only": "infer"},
    "MindSpore MINDIR, BN folded": {"kind": "mindir", "fold_bn": True, "only": "infer"},
    "ONNX Runtime (our ONNX export)": {"kind": "onnx", "only": "infer"},
    "ONNX Runtime, BN folded": {"kind": "onnx", "fold_bn": True, "only": "infer"},
    "MindSpore graph, no fast path": {"kind": "mindspore", "isa": "default", "threads": 0},
    "MindSpore graph, no fast path, split GroupConv": {
        "kind": "mindspore", "isa": "default", "threads": 0, "group_conv": "split"},
    "MindSpore graph, split GroupConv": {"kind": "mindspore", "group_conv": "split"},
    "MindSpore graph, symmetric pools": {"kind": "mindspore", "pool_padding": "symmetric"},
    "MindSpore graph, jit_level O2": {"kind": "mindspore", "jit_level": "O2", "only": "train"},
    "MindSpore graph, graph-kernel fusion": {"kind": "mindspore", "graph_kernel": True, "only": "train"},
    "MindSpore graph, 25 threads (its default)": {"kind": "mindspore", "threads": 0, "only": "train"},
    "PyTorch eager, oneDNN capped at AVX2": {"kind": "torch", "isa": FAST_ISA},
    "PyTorch eager": {"kind": "torch", "isa": "default"},
}
ALWAYS = ("MindSpore graph", "MindSpore graph, MindSpore's kernels", "MindSpore MINDIR (GraphCell)",
          "MindSpore MINDIR, BN folded", "ONNX Runtime (our ONNX export)", "ONNX Runtime, BN folded",
          "PyTorch eager")
PEER = "PyTorch eager"
GEMM_SIZE = 1024


@dataclass
class Result:
    """Timings of one contender on one workload."""

    label: str
    spec: dict
    times: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    first_step_s: float = 0.0
    peak_rss_mb: float = 0.0
    ratios: list[float] = field(default_factory=list)
    error: str = ""


class Worker:
    """A contender process speaking the line protocol of `shufflenet.cli.benchmark_worker`."""

    def __init__(self, spec: dict, env: dict[str, str], log_dir: str) -> None:
        self.log_path = os.path.join(log_dir, f"worker_{id(self)}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shufflenet.cli.benchmark_worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env, cwd=log_dir,
        )

    def ask(self, command: str | None = None) -> dict:
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            with open(self.log_path) as log:
                tail = [t for t in log.read().splitlines() if t.strip() and "[WARNING]" not in t][-3:]
            raise RuntimeError(f"worker exited ({self.proc.returncode}): {' | '.join(tail)}")
        return json.loads(line)

    def close(self) -> dict:
        try:
            return self.ask("quit")
        finally:
            self.proc.wait()
            self.log.close()


def worker_env(isa: str) -> dict[str, str]:
    """The environment of a worker: oneDNN capped at `isa`, or left to its own choice."""
    env = dict(os.environ)
    env.pop(ONEDNN_ISA_ENV, None)
    if isa != "default":
        env[ONEDNN_ISA_ENV] = isa
    return env


def run_workload(contenders: dict[str, dict], rounds: int, steps: int, log_dir: str) -> list[Result]:
    """Start every contender, then time them in turn, `steps` steps each (after one untimed), for
    `rounds` rounds; each round's ratios against the PyTorch peer compare steps timed side by side."""
    results, workers = [], {}
    for label, spec in contenders.items():
        result = Result(label, spec)
        results.append(result)
        try:
            worker = Worker(spec, worker_env(spec.get("isa", "default")), log_dir)
            ready = worker.ask()
            result.first_step_s = ready["first_step_s"]
            workers[label] = (worker, result)
        except RuntimeError as err:
            result.error = str(err)
    for _ in range(rounds):
        medians = {}
        for label, (worker, result) in list(workers.items()):
            try:
                # The first step after waiting for the others is not timed: a process resuming
                # from idle (sleeping thread pools, reclaimed pages) runs it slowly.
                answer = worker.ask(f"run {steps + 1}")
                times = answer["times"][1:]
                result.cpu_s.extend(answer["cpu_s"][1:])
            except RuntimeError as err:
                result.error = str(err)
                del workers[label]
                continue
            result.times.extend(times)
            medians[label] = statistics.median(times)
        if PEER in medians:
            for label, (_, result) in workers.items():
                result.ratios.append(medians[PEER] / medians[label])
    for worker, result in workers.values():
        result.peak_rss_mb = worker.close()["peak_rss_mb"]
    return results


def measure_gemm(env: dict[str, str], threads: int, log_dir: str) -> float:
    """The machine's fp32 GEMM rate in GFLOP/s (numpy BLAS, `threads` threads, best of 10)."""
    env = {**env, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    worker = Worker({"kind": "gemm", "gemm_size": GEMM_SIZE}, env, log_dir)
    worker.ask()
    best = min(worker.ask("run 10")["times"])
    worker.close()
    return 2 * GEMM_SIZE**3 / best / 1e9


def workload_contenders(model: str, size: int, batch: int, mode: str, threads: int,
                        variants: bool = False) -> dict[str, dict]:
    """Worker specs of one workload: every contender in `ALWAYS`, plus the variants if asked."""
    base = {"model": model, "image_size": size,
            "batch": batch, "mode": mode, "threads": threads, "num_classes": 1000, "isa": FAST_ISA}
    return {label: {**base, **spec} for label, spec in CONTENDERS.items()
            if (variants or label in ALWAYS) and spec.get("only", mode) == mode}


def forward_macs(model: str, size: int) -> int:
    """Multiply-adds of one image, measured on the built network."""
    from ..engine.context import pynative_mode
    from ..models import create_model
    from ..models.complexity import count_macs

    with pynative_mode():  # count_macs's forward hooks fire only there
        return count_macs(create_model(model), size)


def summarise(result: Result, macs: int, gemm_gflops: float) -> dict:
    """Medians and derived figures of one contender."""
    spec = result.spec
    row = {"contender": result.label, "spec": spec, "error": result.error,
           "first_step_s": round(result.first_step_s, 2), "peak_rss_mb": round(result.peak_rss_mb)}
    if not result.times:
        return row
    step_s = statistics.median(result.times)
    flops = 2 * macs * spec["batch"] * (3 if spec["mode"] == "train" else 1)
    row.update({
        "median_step_s": step_s,
        "images_per_s": spec["batch"] / step_s,
        "cores_busy": sum(result.cpu_s) / sum(result.times),
        "vs_pytorch": statistics.median(result.ratios) if result.ratios else None,
        "gflops": flops / step_s / 1e9,
        "gemm_share": flops / step_s / 1e9 / gemm_gflops,
        "steps_timed": len(result.times),
    })
    return row


def machine_description(threads: int) -> dict:
    """What the figures were measured on."""
    import mindspore
    import numpy

    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        torch_version = import_torch("the benchmark").__version__
    except MissingDependency:
        torch_version = None
    return {"cpu": model, "logical_cpus": os.cpu_count(), "threads": threads,
            "platform": platform.platform(), "python": platform.python_version(),
            "mindspore": mindspore.__version__, "torch": torch_version, "numpy": numpy.__version__,
            "load_average_start": list(os.getloadavg())}


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
    parser = argparse.ArgumentParser(prog="shufflenet benchmark", description=__doc__.splitlines()[0])
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
