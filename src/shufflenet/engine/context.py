"""MindSpore context for a run: graph mode on the chosen device, data parallelism when asked."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mindspore as ms

from ..utils.cpu import configure_cpu


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a data-parallel job (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local: int = 0  # rank within the node

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_context(device_target: str | None = None, distributed: bool = False) -> Ranks:
    """Graph mode (PyNative is 4-7x slower on CPU), the CPU fast path on CPU; `init()` and
    DATA_PARALLEL with averaged gradients when distributed. Call once per process, from a
    command's `main`, before any network runs. `None` keeps MindSpore's default device."""
    device_target = device_target or ms.get_context("device_target")
    device_id = os.environ.get("DEVICE_ID")  # set per process by rank-table launchers
    try:
        if device_id is not None and device_target != "CPU":
            ms.set_device(device_target, int(device_id))
        else:
            ms.set_device(device_target)
    except RuntimeError as err:
        if "Unsupported device target" not in str(err):
            raise
        raise ValueError(
            f"device_target {device_target} is not available to this MindSpore installation "
            f"(mindspore {ms.__version__}); install its {device_target} build, or pass "
            "--device-target CPU"
        ) from None
    ms.set_context(mode=ms.GRAPH_MODE)
    if device_target == "CPU":
        configure_cpu()  # oneDNN's AVX2 kernels and one thread per core: see utils/cpu.py
    if not distributed:
        return Ranks()
    from mindspore.communication import get_group_size, get_local_rank, get_rank, init

    try:
        init()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(
            f"distributed initialisation failed ({first}); launch with "
            "scripts/run_distribute_train.sh (msrun) or an Ascend rank table, or drop --distributed"
        ) from None
    size = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=size)
    return Ranks(get_rank(), size, get_local_rank())


@contextmanager
def pynative_mode() -> Iterator[None]:
    """PyNative execution for the block, then the caller's mode again. For what needs it
    (`models.complexity.count_macs`: forward hooks fire only there); the switch is the caller's
    explicit step, never a side effect of a library call."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=mode)
