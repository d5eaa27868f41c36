"""Files from elsewhere are untrusted: every number and string they claim is bounded before it is
used, exported models run from the bytes that were checked, images cannot exhaust memory,
foreign weights cannot run code, and ModelArts jobs copy only what they name. Each fault is
driven through the real command (`predict`, `eval.py`, `convert`, `train.py`, the scripts)."""
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from conftest import REPO, fill_deterministic, make_image_folder, obs, one_line_error, run, run_job
from PIL import Image

from shufflenet.data import images as image_module
from shufflenet.data.images import MAX_PIXELS, load_image, to_rgb
from shufflenet.export import export_model
from shufflenet.inference import predictor as predictor_module
from shufflenet.inference.predictor import open_export
from shufflenet.inference.sidecar import read_sidecar
from shufflenet.lineages.common import read_safetensors
from shufflenet.models import META_KEY, ModelDescription, create_model
from shufflenet.models.description import MAX_JSON_DEPTH, MAX_METADATA_BYTES, read_description
from shufflenet.utils.checkpoint import save_checkpoint

MODEL, SIZE, CLASSES = "shufflenet_v1_g3_x0_25", 32, ["cat", "dog", "fox"]
ESC = "\x1b"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 3-class checkpoint with its description, and its MINDIR and ONNX exports."""
    folder = tmp_path_factory.mktemp("model")
    net = create_model(MODEL, num_classes=3)
    fill_deterministic(net, 1)
    net.set_train(False)
    description = ModelDescription(MODEL, 3, SIZE, "imagenet", {}, CLASSES)
    ckpt = save_checkpoint(net, folder / "net.ckpt", extra={META_KEY: description.to_json()})
    mindir = export_model(net, "MINDIR", folder / "net", 0, description)
    onnx = export_model(net, "ONNX", folder / "onnx" / "net", 2, description)
    return ckpt, mindir, onnx


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)).save(path)
    return path


def _meta_checkpoint(path: Path, **fields) -> Path:
    """A checkpoint of nothing but a description (as a hostile 1 KB file would be)."""
    meta = {"model": MODEL, "num_classes": 3, "image_size": SIZE, "preprocessing": "imagenet", **fields}
    ms.save_checkpoint([], str(path), append_dict={META_KEY: json.dumps(meta)})
    return path


def _copy_export(src: Path, folder: Path, **sidecar_changes) -> Path:
    """The export and its sidecar in `folder`, the sidecar's keys changed (None: removed)."""
    folder.mkdir()
    dst = folder / src.name
    dst.write_bytes(src.read_bytes())
    sidecar = json.loads(Path(f"{src}.json").read_text())
    sidecar.update(sidecar_changes)
    Path(f"{dst}.json").write_text(json.dumps({k: v for k, v in sidecar.items() if v is not None}))
    return dst


# 1. Metadata is bounded before anything is built from it.

def test_a_checkpoint_claiming_a_billion_classes_fails_at_once(tmp_path, picture):
    bomb = _meta_checkpoint(tmp_path / "bomb.ckpt", num_classes=10**9)
    assert bomb.stat().st_size < 1024
    start = time.monotonic()
    one_line_error(run("predict", bomb, picture, timeout=120), "bomb.ckpt", "num_classes", "at most 50000")
    data = make_image_folder(tmp_path / "data", train=1, val=1)
    evaluated = run("eval.py", "--ckpt", bomb, "--data-path", data, timeout=120)
    one_line_error(evaluated, "bomb.ckpt", "num_classes")
    assert time.monotonic() - start < 120  # was an OOM kill after 95 s, per command


@pytest.mark.parametrize("fields,fragment", [
    ({"image_size": 10**6}, "image_size must be an integer of at least 32, at most 1024"),
    ({"options": {"in_channels": 10**6}}, "options.in_channels must be a positive integer, at most 16"),
    ({"class_names": ["a" * 300, "b", "c"]}, "class_names[0] has 300 characters"),
    ({"class_names": "abc"}, "class_names must be a list"),
    ({"model": "x" * 10**6}, "model must be a name of at most 64"),
    ({"options": {"pool_padding": ["a"] * 10}}, "options.pool_padding must be a number, a string"),
])
def test_every_number_and_string_of_a_description_is_bounded(fields, fragment):
    meta = {"model": MODEL, "num_classes": 3, "image_size": SIZE, "preprocessing": "imagenet", **fields}
    with pytest.raises(ValueError, match="x.ckpt has an invalid model description") as err:
        read_description({META_KEY: json.dumps(meta)}, "x.ckpt")
    assert fragment in str(err.value) and len(str(err.value)) < 400


def test_a_description_nested_or_sized_beyond_bounds_is_refused_unparsed():
    with pytest.raises(ValueError, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
        read_description({META_KEY: "[" * 100_000 + "]" * 100_000}, "x.ckpt")
    with pytest.raises(ValueError, match="more than the .* a description may have"):
        read_description({META_KEY: " " * (MAX_METADATA_BYTES + 1)}, "x.ckpt")


def test_class_names_cannot_put_escape_sequences_on_the_terminal(model, tmp_path, picture):
    ckpt, mindir, _ = model
    hostile = _meta_checkpoint(tmp_path / "title.ckpt", class_names=["cat", f"{ESC}]0;owned\a", "fox"])
    result = run("predict", hostile, picture)
    one_line_error(result, "title.ckpt", "class_names[1] holds control characters", "\\x1b]0;owned")
    assert ESC not in result.stderr + result.stdout

    exported = _copy_export(mindir, tmp_path / "sidecar", class_names=["cat", f"dog{ESC}[2J", "fox"])
    result = run("predict", exported, picture)
    one_line_error(result, "net.mindir.json", "class_names[1]")
    assert ESC not in result.stderr

    names = tmp_path / "names.txt"
    names.write_text("cat\nd\u202eog\nfox\n")  # a right-to-left override: text shown reversed
    one_line_error(run("predict", ckpt, picture, "--class-names", names), "class_names[1]", "\\u202e")


def test_oversized_and_deeply_nested_sidecars_are_refused_unread(model, tmp_path, picture):
    _, mindir, _ = model
    huge = _copy_export(mindir, tmp_path / "huge")
    os.truncate(f"{huge}.json", MAX_METADATA_BYTES + 1)  # sparse: 64 MiB that take no disk
    one_line_error(run("predict", huge, picture), "net.mindir.json", f"more than the {MAX_METADATA_BYTES}")

    deep = _copy_export(mindir, tmp_path / "deep")
    Path(f"{deep}.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="net.mindir.json: its sidecar JSON nests deeper"):
        read_sidecar(deep)
    for changes, field in ((dict(input_shape=[10**9, 3, SIZE, SIZE]), "input_shape"),
                           (dict(preprocessing={"name": "imagenet", "mean": [0, 0, 0], "std": [0, 1, 1],
                                                "bgr": False, "eval_crop": 0.875}), "preprocessing"),
                           (dict(size_bytes="12"), "size_bytes"), (dict(sha256="00"), "sha256")):
        bad = _copy_export(mindir, tmp_path / field, **changes)
        with pytest.raises(ValueError, match=f"net.mindir.json: {field} must"):
            read_sidecar(bad)


# 2. Exports run from the bytes that were checked; an unhashed sidecar needs the user's word.

@pytest.mark.parametrize("kind", ["mindir", "onnx"])
def test_an_export_swapped_after_its_check_still_runs_the_checked_bytes(model, tmp_path, monkeypatch, kind):
    exported = _copy_export(model[1 if kind == "mindir" else 2], tmp_path / kind)
    original = predictor_module.read_exported
    folders = []

    def check_then_swap(path, sidecar, trust_unverified=False):
        data = original(path, sidecar, trust_unverified)
        Path(path).write_bytes(os.urandom(len(data)))  # replaced between the check and the load
        return data

    def spy_load(file_name, **kwargs):
        folders.append((Path(file_name).parent, Path(file_name).parent.stat().st_mode & 0o777))
        return real_load(file_name, **kwargs)

    real_load = ms.load
    monkeypatch.setattr(predictor_module, "read_exported", check_then_swap)
    monkeypatch.setattr(ms, "load", spy_load)
    inputs = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    logits = open_export(exported)(inputs)
    monkeypatch.undo()
    expected = open_export(_copy_export(model[1 if kind == "mindir" else 2], tmp_path / "again"))(inputs)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    if kind == "mindir":  # a private copy in a fresh 0700 folder, removed once loaded
        assert folders[0][1] == 0o700 and not folders[0][0].exists()


def test_a_sidecar_without_its_hash_needs_an_explicit_flag(model, tmp_path, picture):
    _, mindir, onnx = model
    for src in (mindir, onnx):
        unhashed = _copy_export(src, tmp_path / src.suffix[1:], sha256=None, size_bytes=None)
        one_line_error(run("predict", unhashed, picture), "records no size_bytes and sha256",
                       "--trust-unverified-export")
    trusted = run("predict", unhashed, picture, "--trust-unverified-export")
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert str(picture) in trusted.stdout and "loaded unchecked" in trusted.stderr

    data = make_image_folder(tmp_path / "data", train=1, val=2)
    unhashed = tmp_path / "mindir" / mindir.name
    one_line_error(run("eval.py", "--mindir", unhashed, "--data-path", data), "--trust-unverified-export")
    trusted = run("eval.py", "--mindir", unhashed, "--data-path", data, "--trust-unverified-export")
    assert trusted.returncode == 0 and "top-1" in trusted.stdout, trusted.stderr[-2000:]


# 3. Images cannot exhaust memory; predict reports them and classifies the rest.

def _png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of `width` x `height` black pixels, a few KB on disk (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    compressed = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed)
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """Three images over the limit: Pillow's error range, its warning range, just over ours."""
    folder = tmp_path_factory.mktemp("bombs")
    return [_png_of_zeros(folder / "a_bomb.png", 20_000, 20_000),  # 400 Mpixel: Pillow refuses
            _png_of_zeros(folder / "b_warned.png", 10_000, 10_000),  # 100 Mpixel: Pillow only warns
            _png_of_zeros(folder / "c_over.png", 8_200, 8_200)]  # 67.2 Mpixel: over our 64


def test_predict_reports_each_oversized_image_and_classifies_the_others(model, bombs, picture, tmp_path):
    escaped = tmp_path / f"evil{ESC}[2J.png"
    escaped.write_bytes(picture.read_bytes())
    files = [bombs[0], picture, bombs[1], escaped, bombs[2]]
    result = run("predict", model[1], *files)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    skipped = [line for line in result.stderr.splitlines() if line.endswith("; skipped")]
    assert len(skipped) == 3 and all(bomb.name in line for bomb, line in zip(bombs, skipped)), skipped
    assert all("pixels, more than the 67,108,864 (64 Mpixel) decoded here" in line for line in skipped)
    assert "has 400,000,000 pixels" in skipped[0] and "has 8200x8200 = 67,240,000 pixels" in skipped[2]
    classified = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    assert classified == [str(picture), str(escaped).replace(ESC, "\\x1b")]
    assert ESC not in result.stdout


def test_the_pixel_limit_holds_in_training_workers_without_global_side_effects(bombs, tmp_path):
    from shufflenet.data.sources import ImageFileSource

    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    assert 6000 * 8000 < MAX_PIXELS < Image.MAX_IMAGE_PIXELS  # a 48 Mpixel camera photo fits
    source = ImageFileSource([str(bombs[1]), str(bombs[2])], np.zeros(2, np.int32), ["x"],
                             skip_bad_images=True)
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's, at open; then refused by to_rgb
        assert source[0][1] == -1  # skipped (filtered by the pipeline), not decoded
    assert source[1][1] == -1
    for bomb in bombs:
        with pytest.raises(ValueError, match=bomb.name):
            load_image(bomb)
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before
    assert image_module.MAX_PIXELS == 8192 * 8192


def test_wide_images_are_scaled_in_float32():
    ramp = (np.arange(256 * 256).reshape(256, 256)).astype(np.uint16)
    pixels = np.asarray(to_rgb(Image.fromarray(ramp)))[..., 0]
    np.testing.assert_array_equal(pixels, np.rint(ramp / 257.0).astype(np.uint8))


# 4. Foreign weights: bounded headers, memory-mapped data, no pickled code.

def _safetensors(path: Path, header: bytes, body: bytes = b"", length: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + body)
    return path


def test_convert_refuses_hostile_safetensors_headers_in_one_line(tmp_path):
    deep = _safetensors(tmp_path / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000)
    one_line_error(run("convert", deep, tmp_path / "out.ckpt"), "deep.safetensors", "nests deeper than 16")
    cases = {
        "list": (b"[1, 2]", b"", None, "is not a JSON object"),
        "beyond": (b"{}", b"", 10**6, "its header claims 1000000 bytes, more than the file's 2"),
        "huge": (b"{}", b"", 2**40, "or the 100000000 a header may have"),
        "shape": (json.dumps({"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 8]}}).encode(),
                  b"\0" * 8, None, "tensor w has 8 bytes, not those of a F32 tensor of shape [10000"),
        "outside": (json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}}).encode(),
                    b"\0" * 8, None, "tensor w lies outside the file"),
        "entry": (json.dumps({"w": 7}).encode(), b"", None, "tensor w needs a dtype and a shape"),
    }
    for name, (header, body, length, fragment) in cases.items():
        path = _safetensors(tmp_path / f"{name}.safetensors", header, body, length)
        with pytest.raises(ValueError, match=f"{name}.safetensors") as err:
            read_safetensors(path)
        assert fragment in str(err.value), str(err.value)


def test_safetensors_data_is_memory_mapped_not_read_whole(tmp_path):
    """A 2 GiB integer entry (sparse on disk) beside a small float tensor: only what is used is read."""
    big = 2**31
    header = json.dumps({"big": {"dtype": "I64", "shape": [2**28], "data_offsets": [0, big]},
                         "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [big, big + 16]}}).encode()
    path = _safetensors(tmp_path / "sparse.safetensors", header)
    with open(path, "r+b") as handle:
        handle.seek(8 + len(header) + big)
        handle.write(np.arange(4, dtype="<f4").tobytes())
    # VmHWM, this process image's own peak: ru_maxrss would carry over the parent's (a pytest
    # worker's gigabytes), which the kernel records when the child execs.
    probe = ("import re, sys; from shufflenet.lineages.common import read_safetensors; "
             "state = read_safetensors(sys.argv[1]); assert list(state) == ['w'], state; "
             "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
             "print(state['w'].tolist(), peak)")
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    values, peak_kb = result.stdout.rsplit(" ", 1)
    assert values == "[[0.0, 1.0], [2.0, 3.0]]" and int(peak_kb) < 1_500_000, result.stdout  # not 2 GiB


def test_pytorch_files_that_are_empty_or_run_code_are_named_as_such(tmp_path):
    torch = pytest.importorskip("torch")

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'code_ran'}",)

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    one_line_error(run("convert", empty, tmp_path / "o.ckpt", "--source", "torchvision"),
                   "empty.pth is empty")
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"features.0.0.weight": torch.zeros(1)}, "x": Payload()}, evil)
    one_line_error(run("convert", evil, tmp_path / "o.ckpt", "--source", "torchvision"),
                   "evil.pth: shufflenet refuses to run pickled code: posix.system")
    assert not (tmp_path / "code_ran").exists() and not (tmp_path / "o.ckpt").exists()


# 5. ModelArts copies only OBS locations, into a folder of the job's own, checked when asked.

def test_modelarts_trains_on_its_own_copy_of_a_checked_checkpoint(moxing_path, tmp_path):
    data = make_image_folder(tmp_path / "bucket" / "data", train=6, val=2)
    net = create_model(MODEL, num_classes=3)
    start = save_checkpoint(net, tmp_path / "bucket" / "start.ckpt",
                            extra={META_KEY: ModelDescription(MODEL, 3, SIZE, "imagenet").to_json()})
    digest = hashlib.sha256(start.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    from shufflenet.engine.modelarts import job_folder

    leftovers = job_folder(cache, f"{socket.gethostname()}:{os.getpid()}") / "data" / "train" / "wolf"
    make_image_folder(tmp_path / "old", classes=("wolf",), train=2, val=0)
    leftovers.parent.mkdir(parents=True)
    (tmp_path / "old" / "train" / "wolf").rename(leftovers)  # left there by an earlier job

    result = run_job(moxing_path, data, tmp_path / "out", cache, "--checkpoint-url", obs(start),
                     "--checkpoint-sha256", digest.upper())
    assert result.returncode == 0, result.stderr[-3000:]
    final = ms.load_checkpoint(str(tmp_path / "out" / "final.ckpt"))
    assert read_description(final).num_classes == 3  # the wolf of the earlier job did not join

    wrong = run_job(moxing_path, data, tmp_path / "out2", cache, "--checkpoint-url", obs(start),
                    "--checkpoint-sha256", "0" * 64)
    one_line_error(wrong, "start.ckpt", "--checkpoint-sha256", digest)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("flag,url", [("--data-url", "/local/data"), ("--train-url", "file:///tmp/x"),
                                      ("--checkpoint-url", "https://example.com/x.ckpt")])
def test_modelarts_urls_must_be_obs(tmp_path, flag, url):
    args = ["train.py", "--enable-modelarts", "--data-url", "obs://bucket/data", "--cache-dir", tmp_path,
            flag, url]
    one_line_error(run(*args, timeout=120), flag, "must be an obs:// or s3:// URL", url)
    assert list(tmp_path.iterdir()) == []


# 6. Scripts take option values that look like options.

def test_scripts_resolve_values_that_start_with_a_dash(tmp_path):
    result = subprocess.run(["bash", str(REPO / "scripts" / "run_distribute_train.sh"), "--log_dir", "-logs",
                             "--rank_table", "-table.json", "1", "none"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "invalid option" not in result.stderr, result.stderr
    assert f"--rank_table {tmp_path.resolve()}/-table.json does not exist" in result.stderr
    assert (tmp_path / "-logs").is_dir()
