"""MindSpore context for a run: graph mode on the chosen device, data parallelism when asked."""
from __future__ import annotations

import mindspore as ms

from .trainer import Ranks


def setup_context(device_target: str, distributed: bool = False) -> Ranks:
    """Graph mode (PyNative is 4-7x slower on CPU); `init()` and DATA_PARALLEL with averaged
    gradients when distributed. Call once per process, from a command's `main`."""
    try:
        ms.set_device(device_target)
    except RuntimeError:
        raise ValueError(
            f"device_target {device_target} is not available to this MindSpore installation "
            f"(mindspore {ms.__version__}); install its {device_target} build, or pass "
            "--device-target CPU"
        ) from None
    ms.set_context(mode=ms.GRAPH_MODE)
    if not distributed:
        return Ranks()
    from mindspore.communication import get_group_size, get_local_rank, get_rank, init

    init()
    size = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=size)
    return Ranks(get_rank(), size, get_local_rank())
