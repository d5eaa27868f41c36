"""The CPU fast path (oneDNN capped at AVX2, pinned threads) and the benchmark's plumbing.

The fast path is a process setting, not a different network: the test runs the same
checkpoint-layout network with and without it in two fresh processes (oneDNN reads its cap once
per process) and requires equal logits and equal gradients for every parameter.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shufflenet import bench
from shufflenet.cli import benchmark
from shufflenet.utils.cpu import ONEDNN_ISA_ENV, set_mindspore_threads, set_onednn_isa

TESTS = Path(__file__).parent

# Forward and backward of a small network, saved for comparison. Written to a file because
# MindSpore's graph mode compiles only code it can read from a source file.
GRADIENTS_SCRIPT = '''
import sys
import mindspore as ms
import numpy as np
from mindspore import nn

sys.path.insert(0, {tests!r})
from conftest import fill_deterministic, image_batch

import shufflenet
from shufflenet.utils.cpu import configure_cpu

if {fast!r}:
    configure_cpu(threads=2, onednn_isa="AVX2")
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
net = shufflenet.create_model("shufflenet_v1_g3_x0_5", num_classes=10)
fill_deterministic(net)
# BatchNorm as the affine map it is after training: with batch statistics, sixteen stacked
# BatchNorm backward passes of a random network amplify the last-bit differences of any two
# convolution kernels (even split vs native GroupConv) to ~1 % in the first layer's gradient.
net.set_train(False)
loss = nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
grad = ms.value_and_grad(loss, None, net.trainable_params())
images, labels = image_batch(4, 64), ms.Tensor(np.arange(4, dtype=np.int32))
logits = net(images).asnumpy()
_, grads = grad(images, labels)
names = [p.name for p in net.trainable_params()]
np.savez({out!r}, logits=logits, **{{n: g.asnumpy() for n, g in zip(names, grads)}})
'''


def _forward_backward(tmp_path: Path, fast: bool) -> dict[str, np.ndarray]:
    tag = "fast" if fast else "plain"
    script, out = tmp_path / f"{tag}.py", tmp_path / f"{tag}.npz"
    script.write_text(GRADIENTS_SCRIPT.format(tests=str(TESTS), fast=fast, out=str(out)))
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ISA_ENV}
    subprocess.run([sys.executable, str(script)], check=True, env=env, cwd=tmp_path,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with np.load(out) as data:
        return dict(data)


def test_fast_path_gives_the_same_outputs_and_gradients(tmp_path):
    plain, fast = _forward_backward(tmp_path, False), _forward_backward(tmp_path, True)
    assert plain.keys() == fast.keys() and len(plain) > 100
    np.testing.assert_allclose(fast["logits"], plain["logits"], rtol=1e-4, atol=1e-5)
    for name in plain:
        scale = float(np.abs(plain[name]).max()) or 1.0
        np.testing.assert_allclose(fast[name], plain[name], rtol=0, atol=1e-4 * scale, err_msg=name)


def test_onednn_isa_is_set_removed_and_validated(monkeypatch):
    monkeypatch.delenv(ONEDNN_ISA_ENV, raising=False)
    assert set_onednn_isa("AVX2") is None
    assert os.environ[ONEDNN_ISA_ENV] == "AVX2"
    assert set_onednn_isa("default") == "AVX2"
    assert ONEDNN_ISA_ENV not in os.environ
    with pytest.raises(ValueError, match="onednn_isa must be one of"):
        set_onednn_isa("avx9")


def test_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        set_mindspore_threads(0)


def test_worker_protocol_and_side_by_side_ratios(tmp_path):
    gemm = {"kind": "gemm", "gemm_size": 64, "batch": 1, "mode": "infer"}
    results = bench.run_workload({"A": gemm, bench.PEER: gemm}, rounds=2, steps=3,
                                 log_dir=str(tmp_path))
    for result in results:
        assert not result.error and len(result.times) == 6 and len(result.ratios) == 2
        assert result.peak_rss_mb > 0 and result.first_step_s > 0
    row = bench.summarise(results[0], macs=1000, gemm_gflops=100.0)
    assert row["images_per_s"] > 0 and row["vs_pytorch"] > 0
    json.dumps(row)


class FakeWorker:
    """A contender whose step times are given (`spec["rounds"]`: one list per round, its first
    step the untimed one), so the benchmark's arithmetic is checked against known numbers."""

    def __init__(self, spec, env, log_dir):
        self.rounds = iter(spec["rounds"])

    def ask(self, command=None):
        if command is None:
            return {"ready": True, "first_step_s": 9.0}
        times = next(self.rounds)
        assert command == f"run {len(times)}"
        return {"times": times, "cpu_s": [t / 2 for t in times]}

    def close(self):
        return {"peak_rss_mb": 1.0}


def test_vs_pytorch_is_pytorchs_time_over_ours_in_the_same_round(tmp_path, monkeypatch):
    """README: "vs PyTorch is the median over rounds of PyTorch's step time divided by ours in
    the same round": above 1 when we are faster. Ours takes 0.1, 0.1, 0.3 s per step in three
    rounds, PyTorch 0.4, 0.2, 0.9 s (each round's first, 50 s step untimed): ratios 4, 2, 3,
    median 3. The inverse (1/3), medians of all steps (0.4 / 0.1 = 4) or the untimed steps
    counted would give another number."""
    from shufflenet.bench import runner

    monkeypatch.setattr(runner, "Worker", FakeWorker)
    spec = {"batch": 8, "mode": "infer", "model": "m", "image_size": 32}
    ours = [[50.0, 0.1, 0.1], [50.0, 0.1, 0.1], [50.0, 0.3, 0.3]]
    theirs = [[50.0, 0.4, 0.4], [50.0, 0.2, 0.2], [50.0, 0.9, 0.9]]
    results = bench.run_workload({"ours": {**spec, "rounds": ours}, bench.PEER: {**spec, "rounds": theirs}},
                                 rounds=3, steps=2, log_dir=str(tmp_path))
    assert results[0].ratios == pytest.approx([4.0, 2.0, 3.0])
    row = bench.summarise(results[0], macs=1000, gemm_gflops=100.0)
    assert row["vs_pytorch"] == pytest.approx(3.0)
    assert row["images_per_s"] == pytest.approx(8 / 0.1)  # batch over the median timed step
    assert bench.summarise(results[1], 1000, 100.0)["vs_pytorch"] == pytest.approx(1.0)
    machine = {"cpu": "c", "logical_cpus": 2, "threads": 2, "mindspore": "m", "torch": "t",
               "gemm_gflops": 100.0, "load_average_start": [0.0], "load_average_end": [0.0]}
    assert "| 80.0 | 3.00x |" in benchmark.format_markdown([row], machine)


def test_failing_worker_is_reported_not_raised(tmp_path):
    broken = {"kind": "mindspore", "model": "no_such_model", "mode": "infer", "threads": 1, "num_classes": 10}
    (result,) = bench.run_workload({"broken": broken}, 1, 1, str(tmp_path))
    assert "unknown model" in result.error and not result.times


def test_contenders_of_a_workload():
    train = bench.workload_contenders("shufflenet_v1_g3_x1_0", 224, 16, "train", 2)
    assert list(train) == ["MindSpore graph", "MindSpore graph, MindSpore's kernels", bench.PEER]
    assert train["MindSpore graph"]["isa"] == "AVX2" and train[bench.PEER]["isa"] == "default"
    assert train["MindSpore graph"]["cpu_kernels"] and "cpu_kernels" not in train[
        "MindSpore graph, MindSpore's kernels"]
    infer = bench.workload_contenders("shufflenet_v1_g3_x1_0", 224, 1, "infer", 2, variants=True)
    assert "MindSpore MINDIR, BN folded" in infer and "MindSpore graph, jit_level O2" not in infer
    assert {"ONNX Runtime (our ONNX export)", "ONNX Runtime, BN folded"} <= set(infer)
    assert not any("ONNX" in label for label in train)
    assert infer["MindSpore graph, no fast path"]["isa"] == "default"
    assert all(spec["batch"] == 1 for spec in infer.values())


def test_exported_contenders_compute_the_networks_logits():
    """The benchmark's ONNX Runtime and MINDIR rows time the export of the same network."""
    import mindspore as ms

    from shufflenet.bench import worker as timing

    spec = {"model": "shufflenet_v1_g3_x0_25", "image_size": 32, "batch": 2, "mode": "infer", "threads": 0,
            "num_classes": 10}
    outputs = {}
    for kind, fold_bn in (("mindspore", False), ("onnx", True), ("mindir", True)):
        ms.set_seed(0)
        outputs[kind] = timing.CONTENDERS[kind]({**spec, "kind": kind, "fold_bn": fold_bn})()
    for kind in ("onnx", "mindir"):
        np.testing.assert_allclose(outputs[kind], outputs["mindspore"], rtol=1e-4, atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--modes", "export"], "invalid choice"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_unknown_model_is_one_line_error(capsys):
    assert benchmark.main(["--models", "shufflenet_v1_g5_x1_0"]) == 2
    assert "unknown model(s) ['shufflenet_v1_g5_x1_0']" in capsys.readouterr().err


def test_folded_batchnorm_matches_the_network_it_came_from(tmp_path):
    import mindspore as ms
    from conftest import fill_deterministic, image_batch

    import shufflenet
    from shufflenet.models.fast_ops import fold_batchnorm

    trained = shufflenet.create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    fill_deterministic(trained)
    trained.set_train(False)
    layout = {p.name: p.shape for p in trained.get_parameters()}
    ms.save_checkpoint(trained, str(tmp_path / "net.ckpt"))
    # A fresh network (a compiled one keeps its graph) from the standard checkpoint, then folded.
    deployed = shufflenet.create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    ms.load_checkpoint(str(tmp_path / "net.ckpt"), deployed, strict_load=True)
    fold_batchnorm(deployed)
    images = image_batch(2, 64)
    expected = trained(images).asnumpy()
    # Folding reorders float rounding: compare relative to the largest logit, as the goldens do.
    np.testing.assert_allclose(deployed(images).asnumpy(), expected, rtol=0,
                               atol=1e-5 * float(np.abs(expected).max()))
    names = [p.name for p in deployed.get_parameters()]
    assert len(names) == len(set(names)) and not any("moving_" in n for n in names)
    assert {p.name: p.shape for p in trained.get_parameters()} == layout
