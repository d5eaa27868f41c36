"""This project's C++ CPU kernels, run through MindSpore's aot custom operators.

On CPU, MindSpore 2.10 computes depthwise convolutions with oneDNN's im2col + GEMM and max-pool
gradients with a reference kernel; with the pools they took ~40 % of a ShuffleNetV1 training
step (README, Performance). `use_cpu_kernels(net)` swaps those cells for ones backed by the
direct loops in `depthwise.cc` and `pool.cc`, built on first use by `build.kernel_library`.
"""
from .build import KernelUnavailable, kernel_library
from .cells import CPU_KERNEL_MODES, CpuDepthwiseConv2d, CpuPool2d, use_cpu_kernels

__all__ = ["CPU_KERNEL_MODES", "CpuDepthwiseConv2d", "CpuPool2d", "KernelUnavailable",
           "kernel_library", "use_cpu_kernels"]
