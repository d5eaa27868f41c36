"""This project's C++ CPU kernels, run through MindSpore's aot custom operators.

On CPU, MindSpore 2.10 runs depthwise convolutions as oneDNN's im2col + GEMM, max-pool
gradients in a reference kernel, and pools and BatchNorm in plain-layout kernels: ~40 % of a
ShuffleNetV1 training step before BatchNorm is counted (README, Performance).
`use_cpu_kernels(net)` swaps those for cells backed by the direct loops in `pool.cc`,
`depthwise.cc` and `batchnorm.cc`, built on first use by `build.kernel_library` into a kernel
cache (`shufflenet build-kernels` fills one ahead of time, or publishes one read-only for a
cluster). No library is loaded before its bytes are checked: see `build` for what is trusted
and what is checked.
"""
from .build import KernelUnavailable, fill_cache, kernel_library
from .cells import CPU_KERNEL_MODES, CpuDepthwiseConv2d, CpuPool2d, use_cpu_kernels

__all__ = ["CPU_KERNEL_MODES", "CpuDepthwiseConv2d", "CpuPool2d", "KernelUnavailable",
           "fill_cache", "kernel_library", "use_cpu_kernels"]
