"""One benchmark contender in its own process: `python -m shufflenet.bench.worker SPEC_JSON`.

Each contender (MindSpore graph mode, the exported MINDIR through `nn.GraphCell`, PyTorch eager,
or a fp32 GEMM) runs in a worker process of its own so that its environment (oneDNN's
instruction-set cap is read once per process), its first-step time and its peak RSS are its own.
The parent (`shufflenet benchmark`) keeps every worker of a workload alive and asks them in turn
for a few steps, so the contenders are timed side by side under the same machine load.

Protocol, one JSON object per line: the worker prints `{"ready": ..., "first_step_s": ...}` once
built and run once; then reads `run N` and answers `{"times": [...], "cpu_s": [...]}` (wall
and CPU seconds of each step, CPU summed over threads), and reads `quit` and answers
`{"peak_rss_mb": ...}`.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from typing import Callable

import numpy as np

from ..utils.optional import import_torch

Step = Callable[[], None]


def _inputs(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random batch: the benchmark times the network, not a data pipeline."""
    rng = np.random.default_rng(0)
    size, batch = spec["image_size"], spec["batch"]
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, spec["num_classes"], batch).astype(np.int32)
    return images, labels


def _mindspore_net(spec: dict):
    import mindspore as ms

    from ..models import create_model
    from ..utils.cpu import set_mindspore_threads

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    if spec.get("graph_kernel"):
        ms.set_context(enable_graph_kernel=True)
    if spec["threads"]:
        set_mindspore_threads(spec["threads"])
    return create_model(spec["model"], num_classes=spec["num_classes"], **_options(spec))


def _options(spec: dict) -> dict:
    """The network the family's figures are published for (Megvii's, as the PyTorch peer's:
    `published_options`), with the variant's options where the model has them."""
    from ..models import family_of, model_options

    variant = {key: spec[key] for key in ("group_conv", "pool_padding") if key in spec}
    options = {**family_of(spec["model"]).published_options, **variant}
    return {key: value for key, value in options.items() if key in model_options(spec["model"])}


def mindspore_step(spec: dict) -> Step:
    """Graph-mode training step as `train.py` runs it (forward, softmax CE, backward, SGD
    momentum; with this project's C++ kernels if `cpu_kernels`) or inference."""
    import mindspore as ms
    from mindspore import nn

    net = _mindspore_net(spec)
    if spec.get("cpu_kernels"):
        from ..kernels import use_cpu_kernels

        use_cpu_kernels(net, spec["threads"] or None)
    images, labels = (ms.Tensor(a) for a in _inputs(spec))
    if spec["mode"] == "infer":
        net.set_train(False)
        return lambda: net(images).asnumpy()
    from ..engine.optim import build_optimizer
    from ..engine.train_step import TrainStep, WithLoss

    optimizer = build_optimizer(net, np.array(0.01, np.float32), 0.9, 0.0)  # a constant lr
    train = TrainStep(WithLoss(net, nn.CrossEntropyLoss()), optimizer)  # what train.py runs
    train.set_train()
    if spec.get("jit_level"):
        train.set_jit_config(ms.JitConfig(jit_level=spec["jit_level"]))
    return lambda: train(images, labels).asnumpy()


def export_step(spec: dict) -> Step:
    """Inference through the file `export.py` writes for the same network (verified, BatchNorm
    folded if `fold_bn`): a MINDIR in MindSpore's `GraphCell` or an ONNX file in onnxruntime
    with `threads` intra-op threads, run by the inference module as `eval.py` and `predict` run
    it."""
    from ..export import export_model
    from ..inference import open_export
    from ..models import describe

    if spec["mode"] != "infer":
        raise ValueError("the exported contenders only infer")
    net = _mindspore_net(spec)
    images = _inputs(spec)[0]
    description = describe(spec["model"], spec["num_classes"], image_size=spec["image_size"],
                           options=_options(spec))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(net, spec["kind"].upper(), os.path.join(tmp, "net"), spec["batch"], description,
                            fold_bn=spec.get("fold_bn", False))
        predictor = open_export(path, threads=spec["threads"])
    return lambda: predictor(images)


def torch_step(spec: dict) -> Step:
    """PyTorch eager on the publisher's architecture (Megvii's for ShuffleNetV1): the same step
    as `mindspore_step`."""
    from ..lineages import torch_reference
    from ..models import describe

    torch = import_torch("the benchmark's PyTorch peer")
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = torch_reference(describe(spec["model"], spec["num_classes"]))
    images, labels = (torch.from_numpy(a) for a in _inputs(spec))
    labels = labels.long()
    if spec["mode"] == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(images)

        return infer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        loss.item()

    return train


def gemm_step(spec: dict) -> Step:
    """A square fp32 matrix product (numpy's BLAS): the machine's practical peak for dense math."""
    rng = np.random.default_rng(0)
    n = spec["gemm_size"]
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    return lambda: a @ b


CONTENDERS: dict[str, Callable[[dict], Step]] = {
    "mindspore": mindspore_step,
    "mindir": export_step,
    "onnx": export_step,
    "torch": torch_step,
    "gemm": gemm_step,
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _answer(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(spec: dict) -> None:
    """Build the contender, time its first step, then answer `run N` / `quit` from stdin."""
    start = time.perf_counter()
    step = CONTENDERS[spec["kind"]](spec)
    built = time.perf_counter()
    step()
    _answer({"ready": True, "build_s": built - start, "first_step_s": time.perf_counter() - built})
    for line in sys.stdin:
        command = line.split()
        if command and command[0] == "run":
            times, cpu_s = [], []
            for _ in range(int(command[1])):
                begin, cpu_begin = time.perf_counter(), time.process_time()
                step()
                times.append(time.perf_counter() - begin)
                cpu_s.append(time.process_time() - cpu_begin)
            _answer({"times": times, "cpu_s": cpu_s})
        elif command and command[0] == "quit":
            break
    _answer({"peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    # The worker's protocol owns stdout; MindSpore's and PyTorch's own chatter goes to stderr.
    protocol_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(protocol_out, "w")
    serve(json.loads(sys.argv[1]))
