"""Cells that run this project's C++ kernels on CPU, and the swap that puts them in a network.

They hold the very `Parameter` objects of the cells they replace, so parameter names,
checkpoints, optimizers and EMA are unchanged; only the computation moves. They are float32
and CPU only: `use_cpu_kernels` is applied to the network a CPU run trains, never to one that
is exported (export builds its own network from the weights, see `shufflenet.export`).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..utils.cpu import usable_cpus
from .build import KERNELS, kernel_library

#: `cpu_kernels` values: auto uses them on CPU when they build, on requires them, off never.
CPU_KERNEL_MODES = ("auto", "on", "off")


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value[-2:])


def _custom(name: str, function: str, out_shape, out_dtype, bprop=None) -> ops.Custom:
    """An aot operator on `function` of kernel `name`'s library: the private, checked copy that
    `kernel_library` hands over (never the cache's file, which could change after the check)."""
    return ops.Custom(f"{kernel_library(name)}:{function}", out_shape, out_dtype, "aot", bprop=bprop)


def _same_before(size: int, kernel: int, stride: int) -> int:
    """Padding before a 'same' window (MindSpore's and TensorFlow's: the smaller half)."""
    out = -(-size // stride)
    return max((out - 1) * stride + kernel - size, 0) // 2


class CpuPool2d(nn.Cell):
    """`nn.MaxPool2d` or `nn.AvgPool2d` (pad modes same, valid and pad) computed by the pool
    kernels. `padding` applies in pad mode; 'same' averages exclude the padding, as MindSpore's."""

    def __init__(self, kind: str, kernel: tuple[int, int], stride: tuple[int, int], pad_mode: str,
                 padding: tuple[int, int], count_include_pad: bool, threads: int) -> None:
        super().__init__()
        self.kernel, self.stride, self.pad_mode = kernel, stride, pad_mode
        self.padding = padding if pad_mode == "PAD" else (0, 0)
        self.flags = (int(count_include_pad), threads)
        name = "MaxPool" if kind == "max" else "AvgPool"
        backward = _custom("pool", f"{name}Backward", lambda *shapes: shapes[0], lambda *types: types[0])
        if kind == "max":
            def bprop(x, geometry, out, dout):
                return backward(x, out, dout, geometry), ops.zeros_like(geometry)
        else:
            def bprop(x, geometry, out, dout):
                return backward(x, dout, geometry), ops.zeros_like(geometry)
        self.forward = _custom("pool", f"{name}Forward", self._out_shape, lambda x, g: x, bprop)

    def _pads(self, height: int, width: int) -> tuple[int, int]:
        if self.pad_mode == "SAME":
            return (_same_before(height, self.kernel[0], self.stride[0]),
                    _same_before(width, self.kernel[1], self.stride[1]))
        return self.padding

    def _out_shape(self, x_shape, geometry_shape):
        n, c, h, w = x_shape
        if self.pad_mode == "SAME":
            return [n, c, -(-h // self.stride[0]), -(-w // self.stride[1])]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return [n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1]

    def construct(self, x: Tensor) -> Tensor:
        top, left = self._pads(x.shape[2], x.shape[3])
        geometry = Tensor([self.kernel[0], self.kernel[1], self.stride[0], self.stride[1], top, left,
                           self.flags[0], self.flags[1]], ms.int32)
        return self.forward(x, geometry)


class CpuDepthwiseConv2d(nn.Cell):
    """A depthwise `nn.Conv2d` (square kernel, equal strides, symmetric padding) computed by
    the depthwise kernel; its weight (and bias) are the original cell's parameters."""

    def __init__(self, conv: nn.Conv2d, threads: int) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias if conv.has_bias else None
        kernel, stride, pad = conv.kernel_size[0], conv.stride[0], _conv_padding(conv)
        self.geometry = Tensor(np.array([kernel, stride, pad, threads], np.int32))
        backward = _custom("depthwise", "DepthwiseBackward", lambda x, w, dy, g: (x, w),
                           lambda x, w, dy, g: (x, w))

        def bprop(x, weight, geometry, out, dout):
            dx, dweight = backward(x, weight, dout, geometry)
            return dx, dweight, ops.zeros_like(geometry)

        def out_shape(x_shape, weight_shape, geometry_shape):
            n, c, h, w = x_shape
            return [n, c, (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1]

        self.forward = _custom("depthwise", "DepthwiseForward", out_shape, lambda x, w, g: x, bprop)

    def construct(self, x: Tensor) -> Tensor:
        y = self.forward(x, self.weight, self.geometry)
        return y if self.bias is None else ops.bias_add(y, self.bias)


class CpuBatchNormTrain(nn.Cell):
    """Stands in for `nn.BatchNorm2d.bn_train`, MindSpore's training-mode BatchNorm primitive:
    the same call and outputs, the same moving-statistics update (the primitive's momentum, the
    unbiased batch variance), computed by the batchnorm kernel. Inference keeps `bn_infer`."""

    def __init__(self, primitive: ops.BatchNorm, threads: int) -> None:
        super().__init__()
        self.momentum = float(primitive.momentum)  # the batch's weight in the moving average
        self.settings = Tensor(np.array([primitive.epsilon, threads], np.float32))
        backward = _custom("batchnorm", "BatchNormBackward", lambda x, dy, g, m, v, s: (x, g, g),
                           lambda x, dy, g, m, v, s: (x, g, g))

        def bprop(x, gamma, beta, settings, out, dout):
            dx, dgamma, dbeta = backward(x, dout[0], gamma, out[1], out[2], settings)
            return dx, dgamma, dbeta, ops.zeros_like(settings)

        self.forward = _custom("batchnorm", "BatchNormForward", lambda x, g, b, s: (x, g, g),
                               lambda x, g, b, s: (x, g, g), bprop)

    def construct(self, x, gamma, beta, moving_mean, moving_variance):
        y, mean, var = self.forward(x, gamma, beta, self.settings)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        mean, var = ops.stop_gradient(mean), ops.stop_gradient(var)
        keep = 1.0 - self.momentum
        y = ops.depend(y, ops.assign(moving_mean, moving_mean * keep + mean * self.momentum))
        unbiased = var * (count / max(count - 1, 1))
        y = ops.depend(y, ops.assign(moving_variance, moving_variance * keep + unbiased * self.momentum))
        return y, mean, var, mean, var


def _conv_padding(conv: nn.Conv2d) -> int | None:
    """The padding of every side, or None when the sides differ or the mode is not 'pad'."""
    if conv.pad_mode != "pad":
        return None
    sides = (conv.padding,) * 4 if isinstance(conv.padding, int) else tuple(conv.padding)
    return sides[0] if len(set(sides)) == 1 else None


def _is_depthwise(cell: nn.Cell) -> bool:
    return (isinstance(cell, nn.Conv2d) and cell.group > 1 and cell.group == cell.in_channels
            == cell.out_channels and cell.kernel_size[0] == cell.kernel_size[1]
            and cell.stride[0] == cell.stride[1] and tuple(cell.dilation) == (1, 1)
            and cell.data_format == "NCHW" and _conv_padding(cell) is not None)


def _pool_replacement(cell: nn.Cell, threads: int) -> CpuPool2d | None:
    """The kernel cell of a 2-D max or average pool, or None for what the kernels do not cover
    (ceil mode, dilation, indices, a divisor override, uneven padding, NHWC)."""
    if isinstance(cell, nn.MaxPool2d) and not cell.return_indices:
        kind, attrs = "max", cell.max_pool.attrs
        pads = tuple(cell.padding[-2:]) * 2 if cell.pad_mode == "PAD" else (0,) * 4
    elif isinstance(cell, nn.AvgPool2d):
        kind, attrs = "avg", cell.avg_pool.attrs
        pads = tuple(attrs.get("pad", (0,) * 6)[2:]) if cell.pad_mode == "PAD" else (0,) * 4
    else:
        return None
    plain = (cell.format == "NCHW" and not attrs.get("ceil_mode", False)
             and set(attrs.get("dilation", (1,))) == {1} and not attrs.get("divisor_override", 0)
             and pads[0] == pads[1] and pads[2] == pads[3])
    if not plain:
        return None
    return CpuPool2d(kind, _pair(cell.kernel_size), _pair(cell.stride), cell.pad_mode, (pads[0], pads[2]),
                     bool(attrs.get("count_include_pad", False)), threads)


def _replacement(cell: nn.Cell, threads: int) -> nn.Cell | None:
    if _is_depthwise(cell):
        return CpuDepthwiseConv2d(cell, threads)
    return _pool_replacement(cell, threads)


def _uses_training_primitive(cell: nn.Cell) -> bool:
    """A BatchNorm2d whose training pass runs `bn_train` (not a frozen or synced one)."""
    return (type(cell) is nn.BatchNorm2d and cell.use_batch_statistics is None and cell.format == "NCHW"
            and isinstance(cell.bn_train, ops.BatchNorm))


def use_cpu_kernels(net: nn.Cell, threads: int | None = None) -> dict[str, int]:
    """Swap, in place, every depthwise convolution and pool of `net` for its kernel cell;
    returns how many of each kind were swapped. `threads`: per kernel (default: usable CPUs).

    Raises `KernelUnavailable` when the kernels cannot be built, and `ValueError` off CPU.
    """
    if ms.get_context("device_target") != "CPU":
        raise ValueError("the C++ kernels run on CPU only; leave them off (--cpu-kernels off) on "
                         f"{ms.get_context('device_target')}")
    threads = usable_cpus() if threads is None else threads
    for name in KERNELS:  # all or nothing: a build failure leaves the network as it was
        kernel_library(name)
    swapped = {"depthwise convolutions": 0, "pools": 0, "batch norms": 0}
    names = {id(param): param.name for param in net.get_parameters()}
    for _, parent in list(net.cells_and_names()):
        if _uses_training_primitive(parent):
            kernel = CpuBatchNormTrain(parent.bn_train, threads)
            delattr(parent, "bn_train")  # a primitive attribute would shadow the cell set next
            parent.bn_train = kernel
            swapped["batch norms"] += 1
        for name, child in list(parent.name_cells().items()):
            new = _replacement(child, threads)
            if new is None:
                continue
            if isinstance(parent, (nn.SequentialCell, nn.CellList)):
                parent[int(name)] = new  # their construct iterates their own list
            else:
                setattr(parent, name, new)
            swapped["pools" if isinstance(new, CpuPool2d) else "depthwise convolutions"] += 1
    _restore_names(net, names)
    return swapped


def _restore_names(net: nn.Cell, names: dict[int, str]) -> None:
    """Give every parameter back the name it had before the swap. Setting a new cell as an
    attribute re-prefixes its parameters with that attribute alone (an Xception separable
    convolution's depthwise weight would become `conv1.weight`, clashing across blocks), and
    checkpoints, optimizers and EMA all key on these names."""
    for param in net.get_parameters():
        param.name = names[id(param)]
