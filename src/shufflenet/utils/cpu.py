"""CPU runtime settings for MindSpore that the benchmark found to matter (see README, Performance).

MindSpore's CPU kernels for convolution, pooling and BatchNorm come from oneDNN, always in plain
NCHW layout. On a CPU that reports AVX-512 (measured: AMD EPYC, oneDNN 3.10 in MindSpore 2.10),
oneDNN sends NCHW strided, grouped and depthwise convolutions (forward and data gradient) to
a reference kernel: the 3x3/s2 stem of ShuffleNetV1 takes ~0.6 s for a batch of 16 instead of
~10 ms. Capping oneDNN's instruction set at AVX2 selects its JIT GEMM kernels instead; the
choice is read once per process, at the first oneDNN kernel, so it has to be made before the
first network runs. MindSpore also starts 25 kernel threads whatever the core count; one per
usable CPU is faster on small machines (see the benchmark's "25 threads" row). Nothing here
runs at import.
"""
from __future__ import annotations

import os

#: The environment variable oneDNN reads (once, at its first kernel) to cap its instruction set.
ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
#: Values accepted by `configure_cpu(onednn_isa=...)`; "default" leaves oneDNN's own choice.
ONEDNN_ISAS = ("default", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE")


def set_onednn_isa(isa: str) -> str | None:
    """Cap oneDNN's instruction set for this process (and its children); return the old value.

    "default" removes the cap. Must run before the first convolution of the process: oneDNN
    reads the variable once and ignores later changes.
    """
    if isa not in ONEDNN_ISAS:
        raise ValueError(f"onednn_isa must be one of {ONEDNN_ISAS}, got {isa!r}")
    previous = os.environ.get(ONEDNN_ISA_ENV)
    if isa == "default":
        os.environ.pop(ONEDNN_ISA_ENV, None)
    else:
        os.environ[ONEDNN_ISA_ENV] = isa
    return previous


def set_mindspore_threads(threads: int) -> bool:
    """Use `threads` CPU kernel threads in MindSpore (its default is 25, whatever the core count).

    MindSpore accepts this once per process; returns False (and changes nothing) when the
    thread count was already set.
    """
    import mindspore as ms
    from mindspore._c_expression import RuntimeConf

    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    if RuntimeConf.get_instance().is_op_threads_num_configured():
        return False
    ms.device_context.cpu.op_tuning.threads_num(threads)
    return True


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_cpu(threads: int | None = None, onednn_isa: str = "AVX2") -> dict:
    """Apply the CPU fast path: oneDNN capped at `onednn_isa`, one kernel thread per usable CPU.

    Call once at the start of a process, before any network runs. `threads=None` means
    `usable_cpus()`. Returns the settings as applied, for logs and reports.
    """
    threads = usable_cpus() if threads is None else threads
    set_onednn_isa(onednn_isa)
    applied = set_mindspore_threads(threads)
    return {"onednn_isa": onednn_isa, "threads": threads if applied else "already set"}
