"""Shared test setup: CPU, graph mode (the training mode), and deterministic weight filling."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest


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
