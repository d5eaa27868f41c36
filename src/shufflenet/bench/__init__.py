"""The benchmark as a library: its workloads and contenders (`workloads.py`), the worker process
each contender runs in (`worker.py`) and the runner that times them side by side and derives
the figures (`runner.py`); `shufflenet benchmark` parses arguments and prints."""
from .runner import (
    Result,
    forward_macs,
    machine_description,
    measure_gemm,
    run_workload,
    summarise,
    worker_env,
    workload_contenders,
)
from .workloads import ALWAYS, CONTENDERS, FAST_ISA, MAIN_WORKLOAD, PEER, QUICK_WORKLOADS, WORKLOADS

__all__ = ["ALWAYS", "CONTENDERS", "FAST_ISA", "MAIN_WORKLOAD", "PEER", "QUICK_WORKLOADS", "Result",
           "WORKLOADS", "forward_macs", "machine_description", "measure_gemm", "run_workload", "summarise",
           "worker_env", "workload_contenders"]
