"""Training and inference throughput of this project against PyTorch eager, side by side.

MindSpore runs with this project's CPU fast path (`shufflenet.utils.cpu`: oneDNN capped at AVX2,
one kernel thread per CPU) unless a row says otherwise; PyTorch runs as installed, with the same
thread count. Every contender runs in a worker process of its own (`shufflenet.bench.worker`);
the workers of one workload stay alive together and are asked in turn for a few steps per
round, so they see the same machine load. Reported per contender: median images/s, the median
over rounds of its time ratio against PyTorch in the same round, CPU cores kept busy (process
CPU time over wall time), first-step time (graph compile for MindSpore), peak RSS, and achieved
GFLOP/s (2 x multiply-adds per image; training counted as 3 x forward) with its share of the
machine's fp32 GEMM rate measured in the same run.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from ..utils.cpu import ONEDNN_ISA_ENV
from ..utils.optional import MissingDependency, import_torch
from .workloads import ALWAYS, CONTENDERS, FAST_ISA, GEMM_SIZE, PEER


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
    """A contender process speaking the line protocol of `shufflenet.bench.worker`."""

    def __init__(self, spec: dict, env: dict[str, str], log_dir: str) -> None:
        self.log_path = os.path.join(log_dir, f"worker_{id(self)}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shufflenet.bench.worker", json.dumps(spec)],
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


