"""The C++ CPU kernels (`shufflenet.kernels`) against the MindSpore operations they replace.

Each kernel cell must give the forward values, input gradients, parameter gradients and
BatchNorm statistics of the cell it stands in for, for every family; swapping must leave the
parameters (names and objects) untouched; and the build must be cached, verified and explain
itself when it cannot run.
"""
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic
from mindspore import Tensor, nn

from shufflenet import create_model
from shufflenet.engine.config import Config
from shufflenet.engine.trainer import cpu_kernels
from shufflenet.kernels import (
    CpuDepthwiseConv2d,
    CpuPool2d,
    KernelUnavailable,
    kernel_library,
    use_cpu_kernels,
)
from shufflenet.kernels import build as kernel_build
from shufflenet.kernels.cells import CpuBatchNormTrain
from shufflenet.models import family_of, list_families
from shufflenet.utils.checkpoint import load_weights


class _Loss(nn.Cell):
    """sum(cell(x) * dy): its gradients are the cell's vector-Jacobian products with dy."""

    def __init__(self, cell: nn.Cell) -> None:
        super().__init__()
        self.cell = cell

    def construct(self, x, dy):
        return (self.cell(x) * dy).sum()


def _outputs_and_gradients(holder: nn.SequentialCell, x: Tensor, seed: int = 1) -> list[np.ndarray]:
    """Forward output, then the gradients of the input and of every trainable parameter."""
    out = holder(x)
    dy = Tensor(np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32))
    params = holder.trainable_params()
    grads = ms.grad(_Loss(holder), grad_position=0, weights=params or None)(x, dy)
    grads = [grads[0], *grads[1]] if params else [grads]
    return [out.asnumpy()] + [g.asnumpy() for g in grads]


def _compare_with_kernel(cell: nn.Cell, x: np.ndarray, kind: type, rtol: float) -> None:
    holder = nn.SequentialCell([cell])
    holder.set_train(cell.training)
    expected = _outputs_and_gradients(holder, Tensor(x))
    names = [p.name for p in holder.trainable_params()]
    use_cpu_kernels(holder)
    assert isinstance(holder[0], kind)
    assert [p.name for p in holder.trainable_params()] == names
    got = _outputs_and_gradients(holder, Tensor(x))
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=0, atol=rtol * max(float(np.abs(want).max()), 1e-30))


def _images(shape, ties: bool = False) -> np.ndarray:
    """Random NCHW data; with `ties`, ReLU-like zeros and plateaus of equal values (4x4 blocks)."""
    rng = np.random.default_rng(0)
    if not ties:
        return rng.standard_normal(shape).astype(np.float32)
    n, c, h, w = shape
    blocks = np.maximum(rng.integers(-2, 3, (n, c, -(-h // 4), -(-w // 4))), 0)
    return np.repeat(np.repeat(blocks, 4, 2), 4, 3)[:, :, :h, :w].astype(np.float32)


POOLS = {
    "max same, even": (lambda: nn.MaxPool2d(3, 2, pad_mode="same"), (2, 5, 12, 12)),
    "max same, odd": (lambda: nn.MaxPool2d(3, 2, pad_mode="same"), (2, 5, 13, 11)),
    "max pad 1 (Megvii)": (lambda: nn.MaxPool2d(3, 2, pad_mode="pad", padding=1), (2, 5, 12, 13)),
    "max valid": (lambda: nn.MaxPool2d(3, 2), (2, 5, 13, 13)),
    "max 2x2": (lambda: nn.MaxPool2d(2, 2), (2, 3, 8, 8)),
    "avg same": (lambda: nn.AvgPool2d(3, 2, pad_mode="same"), (2, 5, 13, 12)),
    "avg pad 1, padding counted (Megvii)": (
        lambda: nn.AvgPool2d(3, 2, pad_mode="pad", padding=1, count_include_pad=True), (2, 5, 12, 13)),
    "avg pad 1, padding not counted": (
        lambda: nn.AvgPool2d(3, 2, pad_mode="pad", padding=1, count_include_pad=False), (2, 5, 13, 13)),
    "avg valid": (lambda: nn.AvgPool2d(3, 2), (2, 5, 13, 13)),
}


@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("case", list(POOLS))
def test_pools_give_mindspores_values_and_gradients(case, ties):
    make, shape = POOLS[case]
    # Max pooling picks the same element as MindSpore among ties, so it is exact.
    _compare_with_kernel(make(), _images(shape, ties), CpuPool2d, 0.0 if case.startswith("max") else 1e-6)


@pytest.mark.parametrize("kernel, stride, shape, bias", [
    (3, 1, (2, 6, 9, 9), False), (3, 2, (2, 6, 9, 10), False), (3, 2, (2, 6, 56, 56), False),
    (5, 2, (2, 6, 12, 12), True), (5, 1, (2, 6, 8, 8), False), (7, 1, (2, 6, 7, 7), False),
    (7, 2, (2, 6, 15, 15), False), (3, 1, (3, 40, 14, 14), False)])
def test_depthwise_convolution_gives_mindspores_values_and_gradients(kernel, stride, shape, bias):
    channels = shape[1]
    conv = nn.Conv2d(channels, channels, kernel, stride, pad_mode="pad", padding=kernel // 2,
                     group=channels, has_bias=bias, bias_init="normal")
    _compare_with_kernel(conv, _images(shape), CpuDepthwiseConv2d, 1e-5)


def test_batchnorm_trains_as_mindspores_and_infers_unchanged():
    def make():
        bn = nn.BatchNorm2d(6, momentum=0.8)
        fill_deterministic(bn)
        return bn

    x = _images((4, 6, 7, 9)) * 3 + 1
    _compare_with_kernel(make().set_train(), x, nn.BatchNorm2d, 1e-5)  # the cell stays, bn_train moves
    reference, kernel = nn.SequentialCell([make()]), nn.SequentialCell([make()])
    use_cpu_kernels(kernel)
    assert isinstance(kernel[0].bn_train, CpuBatchNormTrain)
    for holder in (reference, kernel):
        holder.set_train()
        for step in range(2):
            holder(Tensor(x * (step + 1)))
    for name in ("moving_mean", "moving_variance"):  # unbiased variance, the op's momentum
        np.testing.assert_allclose(getattr(kernel[0], name).asnumpy(), getattr(reference[0], name).asnumpy(),
                                   rtol=1e-6, err_msg=name)
    for holder in (reference, kernel):
        holder.set_train(False)
    np.testing.assert_allclose(kernel(Tensor(x)).asnumpy(), reference(Tensor(x)).asnumpy(), rtol=0, atol=1e-6)


FAMILIES = {  # model: swapped depthwise convolutions, pools, BatchNorms
    "shufflenet_v1_g3_x0_5": (16, 4, 49),
    "shufflenet_v2_x0_5": (19, 1, 56),
    "shufflenet_v2_plus_small": (28, 0, 89),
    "mobilenet_v1_025": (13, 0, 27),
    "mobilenet_v2_035": (17, 0, 52),
    "squeezenet1_1": (0, 3, 0),
    "xception": (34, 4, 40),
}


#: Models whose gradients move by 1e-3 and more for a 1e-7 change of the input (measured, below).
KINKED = ("shufflenet_v2_plus_small", "xception")


def test_the_family_table_covers_every_family():
    assert sorted(family_of(model).name for model in FAMILIES) == sorted(list_families())


def _twin_networks(model: str):
    reference = create_model(model, num_classes=10)
    fill_deterministic(reference)
    kernel = create_model(model, num_classes=10)
    load_weights(kernel, {p.name: p for p in reference.get_parameters()}, source="the reference")
    return reference, kernel


@pytest.mark.parametrize("model", list(FAMILIES))
def test_every_family_keeps_its_parameters_outputs_and_gradients(model):
    depthwise, pools, norms = FAMILIES[model]
    reference, kernel = _twin_networks(model)
    params = {p.name: p for p in kernel.get_parameters()}
    swapped = use_cpu_kernels(kernel)
    assert swapped == {"depthwise convolutions": depthwise, "pools": pools, "batch norms": norms}
    assert {p.name: id(p) for p in kernel.get_parameters()} == {n: id(p) for n, p in params.items()}
    # 8 images of 64 px: with fewer, the last stages' batch statistics come from so few values
    # that a 1e-7 change of the input moves the logits by 1e-3 (measured), whichever kernels run.
    x = Tensor(_images((8, 3, 64, 64)))
    for net in (reference, kernel):  # training mode: batch statistics, moving averages updated
        net.set_train()
        for _, cell in net.cells_and_names():
            if isinstance(cell, nn.Dropout):  # its random masks differ between two networks
                cell.set_train(False)
    want = reference(x).asnumpy()
    np.testing.assert_allclose(kernel(x).asnumpy(), want, rtol=0, atol=1e-4 * np.abs(want).max())
    for name in params:
        if "moving" in name:
            want = reference.parameters_dict()[name].asnumpy()
            np.testing.assert_allclose(params[name].asnumpy(), want, rtol=0, atol=1e-4 * np.abs(want).max(),
                                       err_msg=name)
    # Gradients in inference mode: with batch statistics, a dozen stacked BatchNorm backward
    # passes amplify last-bit differences of any two kernels to whole percents in the first
    # layers (see tests/test_fast_path.py); the BatchNorm kernel's own backward is checked
    # above, layer by layer. Kinks (ReLU6, hard-swish) still make ShuffleNetV2+'s gradients move
    # by 5e-5 to 3e-3 (relative L2 norm, measured) for a 1e-7 change of the input whichever
    # kernels run, and the kernels by 4e-4 to 4e-3; Xception's 36 stacked ReLU-separable layers
    # move by 4.8e-3 for that input change in MindSpore's own kernels, and the kernels by 2.3e-4;
    # the other families agree to 3e-6. A wrong kernel moves them by whole units.
    want, have = (_logits_and_gradients(net, x) for net in (reference, kernel))
    assert len(want) == len(reference.trainable_params()) + 1
    np.testing.assert_allclose(have[0], want[0], rtol=0, atol=1e-4 * np.abs(want[0]).max())
    assert _relative_distance(want[1:], have[1:]) <= (1e-2 if model in KINKED else 1e-4)


def _logits_and_gradients(net: nn.Cell, x: Tensor) -> list[np.ndarray]:
    """The logits and every parameter's gradient, from one compiled graph (logits as its aux)."""
    net.set_train(False)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    labels = Tensor(np.arange(x.shape[0], dtype=np.int32) % 10)

    def loss_and_logits(images):
        logits = net(images)
        return loss(logits, labels), logits

    (_, logits), grads = ms.value_and_grad(loss_and_logits, None, net.trainable_params(), has_aux=True)(x)
    return [logits.asnumpy()] + [g.asnumpy() for g in grads]


def _relative_distance(arrays: list[np.ndarray], others: list[np.ndarray]) -> float:
    """|a - b| / |a| over all the tensors of each list taken as one vector."""
    a, b = (np.concatenate([t.ravel() for t in tensors]) for tensors in (arrays, others))
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def test_kernel_results_do_not_depend_on_the_thread_count():
    outputs = []
    for threads in (1, 2, 3):
        conv = nn.Conv2d(64, 64, 3, pad_mode="pad", padding=1, group=64)
        bn = nn.BatchNorm2d(64)
        fill_deterministic(conv)
        holder = nn.SequentialCell([conv, bn, nn.MaxPool2d(3, 2, pad_mode="same")]).set_train()
        use_cpu_kernels(holder, threads=threads)
        outputs.append(_outputs_and_gradients(holder, Tensor(_images((4, 64, 28, 28)))))
    for other in outputs[1:]:
        for want, have in zip(outputs[0], other):
            np.testing.assert_array_equal(have, want)


def test_swapping_twice_changes_nothing_more():
    net = create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    assert sum(use_cpu_kernels(net).values()) == 69
    assert sum(use_cpu_kernels(net).values()) == 0


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    """A fresh, empty kernel cache for the test (the process-wide memo is cleared around it)."""
    monkeypatch.setenv(kernel_build.CACHE_ENV, str(tmp_path / "kernels"))
    kernel_library.cache_clear()
    yield tmp_path / "kernels"
    kernel_library.cache_clear()


def test_library_is_built_once_verified_and_rebuilt_when_damaged(kernel_cache):
    path = kernel_library("pool")  # a private copy of the cached library, what MindSpore loads
    cached = kernel_cache / kernel_build.library_name("pool", kernel_build.find_compiler())
    assert path.parent == kernel_build.load_folder() and path.read_bytes() == cached.read_bytes()
    assert sorted(p.name for p in kernel_cache.iterdir()) == [cached.name, cached.name + ".sha256"]  # no temp
    assert os.stat(kernel_cache).st_mode & 0o777 == 0o700
    built = cached.stat().st_mtime_ns
    kernel_library.cache_clear()
    assert kernel_library("pool") == path and cached.stat().st_mtime_ns == built  # reused
    cached.unlink()  # a new file, as a damaged copy would be
    cached.write_bytes(b"not a shared library")
    kernel_library.cache_clear()
    assert kernel_library("pool") == path and cached.stat().st_size > 1000  # rebuilt
    with pytest.raises(ValueError, match="unknown kernel 'conv'; known: pool, depthwise, batchnorm"):
        kernel_library("conv")


def test_a_missing_compiler_or_failed_build_is_explained(kernel_cache, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(KernelUnavailable, match="no C.. compiler: 'no-such-compiler'.*install g.."):
        kernel_library("pool")
    monkeypatch.setenv("CXX", "false")  # found, but fails
    with pytest.raises(KernelUnavailable, match="could not build the pool kernel"):
        kernel_library("pool")
    assert not kernel_cache.exists() or not any(kernel_cache.iterdir())


@pytest.mark.parametrize("mode, device, amp, expected", [
    ("off", "CPU", "O0", ""),
    ("auto", "GPU", "O2", ""),
    ("auto", "CPU", "O0", "C++ CPU kernels: 16 depthwise convolutions, 4 pools, 49 batch norms"),
    ("auto", "CPU", "O2", "C++ CPU kernels not used (they compute in fp32 only, and amp_level is O2)"),
    ("on", "CPU", "O2", ValueError("--cpu-kernels on: they compute in fp32 only, and amp_level is O2")),
    ("on", "Ascend", "O3", ValueError("--cpu-kernels on: they run on CPU only, not Ascend")),
])
def test_training_uses_the_kernels_as_cpu_kernels_says(mode, device, amp, expected):
    net = create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    config = Config(cpu_kernels=mode, device_target=device)
    if isinstance(expected, Exception):
        with pytest.raises(type(expected), match=str(expected)):
            cpu_kernels(net, config, amp)
    else:
        assert cpu_kernels(net, config, amp).startswith(expected)


def test_training_without_a_compiler_falls_back_or_refuses(kernel_cache, monkeypatch):
    monkeypatch.setenv("CXX", os.path.join("missing", "g++"))
    net = create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    note = cpu_kernels(net, Config(cpu_kernels="auto"), "O0")
    assert note.startswith("C++ CPU kernels not used (no C++ compiler")
    assert not any(isinstance(cell, CpuDepthwiseConv2d) for _, cell in net.cells_and_names())
    with pytest.raises(ValueError, match="--cpu-kernels on: no C.. compiler"):
        cpu_kernels(net, Config(cpu_kernels="on"), "O0")
