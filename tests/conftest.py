"""Shared test setup: CPU, graph mode (the training mode), and deterministic weight filling."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from shufflenet.engine.context import pynative_mode


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to start without the test extras: a missing reference (mindcv, torch, OpenCV)
    would otherwise skip its parity tests and the suite would pass having checked less."""
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted = [Requirement(text) for text in metadata.requires("shufflenet-mindspore") or []]
    missing = []
    for requirement in wanted:
        if requirement.marker is None or not requirement.marker.evaluate({"extra": "test"}):
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{requirement} (installed: {installed or 'none'})")
    if missing:
        pytest.exit(f"the test extras are not installed: {', '.join(missing)}; run "
                    "pip install -e \".[test]\"", returncode=4)


@pytest.fixture(autouse=True, scope="session")
def _graph_mode_on_cpu():
    from shufflenet.utils.cpu import configure_cpu

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    configure_cpu(threads=threads_per_worker())  # what every command does on CPU


def threads_per_worker() -> int:
    """The usable CPUs shared out among pytest-xdist's workers (one process without it): a
    worker with as many threads as cores would make every kernel wait for the other's."""
    import torch

    from shufflenet.utils.cpu import usable_cpus

    threads = max(1, usable_cpus() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    torch.set_num_threads(threads)
    return threads


def fill_deterministic(net, seed: int = 0) -> None:
    """Give every parameter (BatchNorm statistics too) reproducible, well-scaled random values.

    Independent of MindSpore's initialisers, so golden outputs pin the architecture alone.
    """
    rng = np.random.default_rng(seed)
    for param in sorted(net.get_parameters(), key=lambda p: p.name):
        shape = param.shape
        if param.name.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif param.name.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            value = rng.standard_normal(shape) * 0.1
        param.set_data(ms.Tensor(value.astype(np.float32)))


def randomise_torch(model, seed: int = 0, gain: float = 2.0):
    """A PyTorch `model` with random weights (variance gain / fan-in) and BatchNorm statistics
    and scales, in inference mode: a publisher's network as if trained, for parity tests."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var") or (tensor.ndim == 1 and name.endswith("weight")):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)  # variances, BN scales
            elif tensor.is_floating_point():
                scale = (gain / tensor[0].numel()) ** 0.5 if tensor.ndim > 1 else 0.1
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * scale)
    return model.eval()


def image_batch(batch: int = 2, size: int = 32, seed: int = 0) -> ms.Tensor:
    rng = np.random.default_rng(seed)
    return ms.Tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32))


def batches(made) -> list:
    """Every batch of a pipeline as numpy arrays; given `create_dataset`'s (dataset, info), it is
    iterated under the epoch's augmentation seed, as the trainer iterates it."""
    from shufflenet.data import seeded

    dataset, info = made if isinstance(made, tuple) else (made, None)
    with seeded(info.seed) if info is not None else contextlib.nullcontext():
        return list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))


def make_image_folder(root, classes=("cat", "dog", "fox"), train=6, val=3, size=40, seed=0):
    """An ImageNet-style `root/{train,val}/<class>/*.{jpg,png}` tree of small random images.

    Each class has its own mean colour, so a network can tell them apart.
    """
    from pathlib import Path

    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train), ("val", val)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = np.zeros(3)
                base[label % 3] = 200
                pixels = np.clip(base + rng.normal(0, 30, (size, size + 8, 3)), 0, 255)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i}.{ext}")
    return root


#: One small model of every registered family. Tests that promise "every family" run these, and
#: `test_every_family.py` fails when a family is registered without an entry here.
FAMILY_MODELS = {
    "shufflenet_v1": "shufflenet_v1_g3_x0_25",
    "shufflenet_v2": "shufflenet_v2_x0_5",
    "shufflenet_v2_plus": "shufflenet_v2_plus_small",
    "mobilenet_v1": "mobilenet_v1_025",
    "mobilenet_v2": "mobilenet_v2_035",
    "squeezenet": "squeezenet1_1",
    "xception": "xception",
}


class PublisherServer:
    """A publisher on 127.0.0.1: serves files by URL path, resumes with `Range` as CDNs do, and
    misbehaves on request (`faults[path]`: an HTTP status, or `"cut"` to close the connection
    half-way through the body every time, `"cut-once"` only the first time)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.faults: dict[str, object] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                server.requests.append((self.path, self.headers.get("Range")))
                server.answer(self)

            def log_message(self, *args) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def answer(self, handler) -> None:
        body = self.files.get(handler.path)
        fault = self.faults.get(handler.path)
        if isinstance(fault, int) or body is None:
            handler.send_error(fault if isinstance(fault, int) else 404)
            return
        asked = handler.headers.get("Range")  # "bytes=N-"
        start = int(asked.split("=")[1].split("-")[0]) if asked else 0
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Length", str(len(body) - start))
        handler.end_headers()
        if fault in ("cut", "cut-once"):
            handler.wfile.write(body[start:start + (len(body) - start) // 2])
            handler.close_connection = True
            if fault == "cut-once":
                self.faults.pop(handler.path)
            return
        handler.wfile.write(body[start:])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def publisher_server():
    server = PublisherServer()
    yield server
    server.close()


def in_ci() -> bool:
    """CI services set CI=true; there the tests that need root must run, not skip."""
    return os.environ.get("CI", "").lower() in ("true", "1")


@contextlib.contextmanager
def small_mount(path: Path, options: str):
    """A small tmpfs at `path`. Mounting needs root (CAP_SYS_ADMIN): elsewhere the test is skipped
    with a reason `-ra` prints, and in CI (CI=true, run as root) it fails, so it never goes
    untested there unnoticed."""
    path.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                 capture_output=True, text=True)
        error = mounted.stderr.strip()[:200] if mounted.returncode else ""
    except OSError as err:  # no mount command
        error = str(err)
    if error:
        reason = (f"full and read-only disks NOT tested: mounting a tmpfs needs root (CAP_SYS_ADMIN); "
                  f"mount said: {error}")
        if in_ci():
            pytest.fail(f"{reason} (CI=true: CI must run this test as root)", pytrace=False)
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


#: The repository root: commands run as a user types them.
REPO = Path(__file__).resolve().parents[1]


def run(*args, timeout=600, **kwargs):
    """A command as a user types it: `train.py ...`, `eval.py ...` or `shufflenet ...`."""
    first, *rest = map(str, args)
    command = [sys.executable, str(REPO / first)] if first.endswith(".py") else [
        sys.executable, "-m", "shufflenet", first]
    return subprocess.run([*command, *rest], capture_output=True, text=True, timeout=timeout, **kwargs)


#: The smallest train.py run of the suite (ShuffleNetV1 0.25x at 32 px): commands whose subject
#: is the training loop, not a family.
TINY = ["--model", "shufflenet_v1_g3_x0_25", "--image-size", "32", "--batch-size", "6", "--lr", "0.01",
        "--num-workers", "1", "--log-interval", "5"]


def interrupted_train(args, at: Path, sig: signal.Signals, timeout: float = 300) -> tuple[int, str]:
    """train.py `args` in a subprocess, sent `sig` as soon as the file `at` appears (a user's
    Ctrl-C, a scheduler's SIGTERM, the OOM killer's SIGKILL): its exit code and stderr."""
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not at.exists():
        if proc.poll() is not None:
            pytest.fail(f"train.py ended before {at.name} appeared: {proc.communicate()[1][-2000:]}")
        assert time.time() < deadline, f"no {at.name} after {timeout} s"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def one_line_error(result, *fragments):
    """Exit 1, one line on stderr (after MindSpore's own warnings) holding every fragment."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


FAKE_MOXING = '''
import shutil
from pathlib import Path


def _local(path):  # obs:///tmp/x -> /tmp/x: the "bucket" is the local file system
    return path.split("://", 1)[1] if "://" in path else path


class file:  # the two calls of moxing.file the project uses
    @staticmethod
    def copy_parallel(src, dst):
        shutil.copytree(_local(src), _local(dst), dirs_exist_ok=True)  # merges, as moxing does

    @staticmethod
    def copy(src, dst):
        Path(_local(dst)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_local(src), _local(dst))
'''


def obs(path) -> str:
    """The fake OBS URL of a local path."""
    return f"obs://{Path(path).resolve()}"


@pytest.fixture()
def moxing_path(tmp_path):
    folder = tmp_path / "site"
    (folder / "moxing").mkdir(parents=True)
    (folder / "moxing" / "__init__.py").write_text(FAKE_MOXING)
    return folder


def run_job(moxing_path, data, obs_out, cache, *extra):
    env = {**os.environ, "PYTHONPATH": f"{moxing_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["--enable-modelarts", "--data-url", obs(data), "--train-url", obs(obs_out), "--cache-dir", cache,
            "--model", "shufflenet_v1_g3_x0_25", "--image-size", "32", "--batch-size", "6",
            "--epochs", "1", "--num-workers", "1", "--no-export", "--lr", "0.01", *extra]
    return subprocess.run([sys.executable, str(REPO / "train.py"), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def write_cifar(root, skip=(), truncate=(), extra=()):
    """CIFAR-10's binary files of random records (labels 0..9), some skipped, cut or added."""
    from shufflenet.data.sources import CIFAR10_FILES, CIFAR10_RECORD, CIFAR10_RECORDS_PER_FILE

    rng = np.random.default_rng(0)
    root.mkdir(exist_ok=True)
    for name in CIFAR10_FILES["train"] + CIFAR10_FILES["val"] + list(extra):
        if name in skip:
            continue
        records = rng.integers(0, 256, (CIFAR10_RECORDS_PER_FILE, CIFAR10_RECORD), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, CIFAR10_RECORDS_PER_FILE)
        data = records.tobytes()
        (root / name).write_bytes(data[:-100] if name in truncate else data)
    return root


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest |actual - expected| relative to the largest |expected|."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def relative_logit_difference(size: int, model, ckpt, preprocessing: str) -> float:
    """A PyTorch publisher network's logits against the checkpoint converted from it, on a
    preprocessed probe batch of `size` px: the largest difference relative to the largest logit."""
    import torch

    from shufflenet.data.presets import get_preprocessing, probe_batch
    from shufflenet.inference import load_network

    inputs = probe_batch(2, size, get_preprocessing(preprocessing), seed=3)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    with pynative_mode():
        net, _ = load_network(ckpt)
        actual = net(ms.Tensor(inputs)).asnumpy()
    return relative_difference(actual, expected)


def convert_and_check(src, dst, capsys, size: int, relative: float) -> None:
    """`shufflenet convert` with its comparison at `size` px; the relative difference it printed
    is within `relative` too."""
    import re

    from shufflenet.cli.convert import main as convert_main

    assert convert_main([str(src), str(dst), "--check-size", str(size)]) == 0
    printed = re.search(r"\(relative ([^)]+)\)", capsys.readouterr().out)
    assert printed and float(printed[1]) <= relative, printed


def lineage_preprocessing(lineage, model: str) -> str:
    """The input convention a lineage's module gives its converted weights (else the model's)."""
    import shufflenet.lineages as package
    from shufflenet.models import model_entry

    module = next(module for module in vars(package).values()
                  if isinstance(module, type(package)) and lineage in vars(module).values())
    return getattr(module, "PREPROCESSING", model_entry(model).preprocessing)


def torch_names(module) -> dict:
    return dict.fromkeys(module.state_dict())


def mindspore_names(name: str, renamed: dict | None = None, **options) -> dict:
    """Our parameter names of `name` (10 classes), some renamed as a publisher's files name them."""
    from shufflenet.models import create_model

    net = create_model(name, num_classes=10, **options)
    return dict.fromkeys((renamed or {}).get(p.name, p.name) for p in net.get_parameters())


def mindcv_training_state(net) -> list[dict]:
    """What mindcv's training network adds to a checkpoint: Adam slots, EMA copies, counters."""
    entries = []
    for param in net.trainable_params():
        for prefix in ("adam_m", "adam_v", "ema"):
            entries.append({"name": f"{prefix}.{param.name}", "data": param.data * 0.5 + 1.0})
    counters = {"global_step": np.array([1000], np.int32), "beta1_power": np.array([0.9], np.float32),
                "learning_rate": np.array([0.1], np.float32), "scale_sense": np.array(1024.0, np.float32)}
    entries += [{"name": name, "data": ms.Tensor(value)} for name, value in counters.items()]
    return entries


def publish_mindcv(module, names, folder, size: int = 64, classes: int = 10) -> tuple[ms.Tensor, dict]:
    """mindcv's networks `names` of `module`, randomised, saved as mindcv saves them (every
    other file with training state), and their logits on one probe batch."""
    from shufflenet.data.presets import get_preprocessing, probe_batch

    inputs = ms.Tensor(probe_batch(2, size, get_preprocessing("imagenet"), seed=3))
    files = {}
    for i, name in enumerate(names):
        net = getattr(module, name)(num_classes=classes)
        fill_deterministic(net, i)
        net.set_train(False)
        entries = [{"name": p.name, "data": p.data} for p in net.get_parameters()]
        path = folder / f"{name}.ckpt"
        ms.save_checkpoint(entries + (mindcv_training_state(net) if i % 2 == 0 else []), str(path),
                           append_dict={"epoch_num": 300, "step_num": 750600})
        files[name] = (net, path, net(inputs).asnumpy())
    return inputs, files
