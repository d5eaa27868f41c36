"""Faults a user meets, driven through the real commands: nothing they made is lost or damaged,
nothing damaged is used, and every failure is one line without a traceback."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO,
    TINY,
    interrupted_train,
    make_image_folder,
    one_line_error,
    run,
    small_mount,
    write_cifar,
)
from PIL import Image

from shufflenet.engine.run_folder import EXPORT_SIDECAR, FINAL_EMA_CHECKPOINT, RUN_FILES
from shufflenet.utils.checkpoint import CheckpointError, read_checkpoint
from shufflenet.utils.files import sha256_file

TINY = [*TINY, "--epochs", "1"]  # one epoch: the subject is how a run fails, not training


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), train=12, val=4)


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory):
    """A run into a recipe's default folder, as `python train.py` makes one."""
    root = tmp_path_factory.mktemp("runs")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"output_dir: {root / 'out'}\ndata_path: {data}\n")
    result = run("train.py", "--config", recipe, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe, root / "out"


def test_a_second_run_never_overwrites_the_first(first_run, data, tmp_path):
    recipe, out = first_run
    before = {p: sha256_file(p) for p in out.rglob("*") if p.is_file()}
    again = run("train.py", "--config", recipe, *TINY, "--no-export")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"this one writes to {out}-2" in again.stdout
    assert (out.parent / "out-2" / "final.ckpt").is_file()
    assert {p: sha256_file(p) for p in out.rglob("*") if p.is_file()} == before

    explicit = run("train.py", *TINY, "--data-path", data, "--output-dir", out)
    one_line_error(explicit, f"{out} already holds a run", "--resume auto", "--overwrite")
    assert {p: sha256_file(p) for p in out.rglob("*") if p.is_file()} == before


def test_the_run_folder_table_names_what_a_run_writes(first_run):
    """`run_folder.RUN_FILES` (what --overwrite removes, what marks a folder taken) is exactly
    what a run writes: all of it but the EMA's checkpoint, which needs --ema."""
    _, out = first_run
    assert sorted(p.name for p in out.iterdir()) == sorted(set(RUN_FILES) - {FINAL_EMA_CHECKPOINT})
    assert EXPORT_SIDECAR == "model.mindir.json"


def test_overwrite_replaces_an_earlier_run_entirely(data, tmp_path):
    out = tmp_path / "o"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch-0009.ckpt").write_bytes(b"an older, longer run")
    (out / "metrics.csv").write_text("epoch,train_loss\n9,0.1\n")
    (out / FINAL_EMA_CHECKPOINT).write_bytes(b"the EMA of an earlier run with --ema")
    (out / ".best.tmp-4242.ckpt").write_bytes(b"half of a checkpoint a killed run was writing")
    result = run("train.py", *TINY, "--data-path", data, "--output-dir", out, "--overwrite", "--no-export")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "removed 1 unfinished file(s) of a killed run" in result.stdout
    assert not (out / ".best.tmp-4242.ckpt").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0001.ckpt"]
    assert not (out / FINAL_EMA_CHECKPOINT).exists()
    assert [ln.split(",")[0] for ln in (out / "metrics.csv").read_text().splitlines()] == ["epoch", "1"]


def _flip(path: Path, offsets) -> None:
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _copy_export(src: Path, folder: Path) -> Path:
    folder.mkdir()
    for suffix in ("", ".json"):
        (folder / (src.name + suffix)).write_bytes(Path(str(src) + suffix).read_bytes())
    return folder / src.name


def test_damaged_exports_are_refused_before_use(first_run, data, tmp_path):
    _, out = first_run
    flipped = _copy_export(out / "model.mindir", tmp_path / "flipped")
    _flip(flipped, range(4000, 4016))
    one_line_error(run("eval.py", "--mindir", flipped, "--data-path", data), "SHA-256", "re-export")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    one_line_error(run("predict", flipped, image), "SHA-256")

    cut = _copy_export(out / "model.mindir", tmp_path / "cut")
    cut.write_bytes(cut.read_bytes()[:5000])
    one_line_error(run("predict", cut, image), "bytes but was exported with")

    garbage = _copy_export(out / "model.mindir", tmp_path / "garbage")
    garbage.write_bytes(os.urandom(3000))
    sidecar = json.loads(Path(str(garbage) + ".json").read_text())
    sidecar.update(size_bytes=3000, sha256=sha256_file(garbage))  # a consistent pair: still refused
    Path(str(garbage) + ".json").write_text(json.dumps(sidecar))
    one_line_error(run("predict", garbage, image), "is not a MINDIR")

    onnx = run("export.py", "--ckpt", out / "final.ckpt", "--format", "ONNX", "--file-name",
               tmp_path / "onnx" / "net")
    assert onnx.returncode == 0, onnx.stderr[-2000:]
    assert (tmp_path / "onnx").stat().st_mode & 0o777 == 0o755  # MindSpore would leave 0700
    _flip(tmp_path / "onnx" / "net.onnx", range(20000, 20008))
    one_line_error(run("predict", tmp_path / "onnx" / "net.onnx", image), "SHA-256")


def _entry_ends(data: bytes) -> list[int]:
    """Offsets where each top-level protobuf entry of a checkpoint ends (before the CRC trailer)."""
    ends, pos = [], 0
    while pos < len(data) and data[pos] == 0x0A:  # field 1, length-delimited
        pos, length, shift = pos + 1, 0, 0
        while True:
            byte = data[pos]
            length |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                break
        pos += length
        ends.append(pos)
    return ends


def test_a_project_checkpoint_cut_anywhere_is_refused(first_run, tmp_path, capsys):
    _, out = first_run
    data = (out / "checkpoints" / "epoch-0001.ckpt").read_bytes()
    ends = _entry_ends(data)
    assert len(ends) > 500 and ends[-1] < len(data)  # every entry, then the CRC trailer
    cut = tmp_path / "cut.ckpt"
    for end in [*ends, *range(ends[-1] + 1, len(data))]:
        cut.write_bytes(data[:end])
        with pytest.raises(CheckpointError, match="cut short|damaged"):
            read_checkpoint(cut)
    for end in (ends[0] - 3, ends[len(ends) // 2] + 7):  # inside an entry
        cut.write_bytes(data[:end])
        with pytest.raises(CheckpointError):
            read_checkpoint(cut)
    cut.write_bytes(data[:ends[-2]])  # before `epoch` and the description
    one_line_error(run("eval.py", "--ckpt", cut), "cut short")


def test_a_corrupt_validation_image_keeps_the_trained_epoch(tmp_path):
    data = make_image_folder(tmp_path / "data", train=12, val=2)
    good = next((data / "val" / "cat").glob("*.jpg"))
    (data / "val" / "cat" / "broken.jpg").write_bytes(good.read_bytes()[:150])
    out = tmp_path / "out"
    result = run("train.py", *TINY, "--data-path", data, "--output-dir", out)
    one_line_error(result, "bad image:", "broken.jpg")
    assert (out / "checkpoints" / "epoch-0001.ckpt").is_file()


def test_eval_never_writes_over_its_inputs_and_checks_the_folder_first(first_run, data, tmp_path):
    _, out = first_run
    ckpt = out / "final.ckpt"
    digest = sha256_file(ckpt)
    one_line_error(run("eval.py", "--ckpt", ckpt, "--data-path", data, "--output", ckpt), "overwrite")
    assert sha256_file(ckpt) == digest
    started = time.time()
    one_line_error(run("eval.py", "--ckpt", ckpt, "--data-path", data, "--output",
                       tmp_path / "missing" / "r.json"), "does not exist")
    assert time.time() - started < 60


def test_full_and_read_only_disks_are_one_line_errors(first_run, data, tmp_path):
    _, out = first_run
    with small_mount(tmp_path / "full", "size=64k") as full:
        result = run("train.py", *TINY, "--data-path", data, "--output-dir", full / "run", "--no-export")
        one_line_error(result, "No space left on device", str(full))
        assert not [p for p in full.rglob(".*tmp-*")]
    with small_mount(tmp_path / "ro", "ro,size=64k") as read_only:
        one_line_error(run("export.py", "--ckpt", out / "final.ckpt", "--file-name", read_only / "m"),
                       "Read-only file system")
        one_line_error(run("eval.py", "--ckpt", out / "final.ckpt", "--data-path", data, "--output",
                           read_only / "r.json"), "Read-only file system")


@pytest.mark.parametrize("ci", ["", "true"])
@pytest.mark.parametrize("mount", ["refused", "missing"])
def test_a_tmpfs_that_cannot_be_mounted_skips_visibly_and_fails_in_ci(tmp_path, monkeypatch, ci, mount):
    """What a user without root sees (-ra prints the reason), and what CI gets instead."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if mount == "refused":  # as for a user without root
        (bin_dir / "mount").write_text("#!/bin/sh\necho 'mount: only root can do that' >&2\nexit 1\n")
        (bin_dir / "mount").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("CI", ci)
    try:  # a skip raised inside pytest.raises would skip this test, not fail it
        with small_mount(tmp_path / "m", "size=64k"):
            pass
        outcome = None
    except (pytest.fail.Exception, pytest.skip.Exception) as err:
        outcome = err
    assert type(outcome) is (pytest.fail.Exception if ci else pytest.skip.Exception), outcome
    assert "full and read-only disks NOT tested: mounting a tmpfs needs root" in str(outcome)
    assert ("only root" in str(outcome)) == (mount == "refused")


def test_sigterm_says_where_the_last_checkpoint_is(data, tmp_path):
    out = tmp_path / "out"
    args = [*TINY, "--epochs", "30", "--data-path", data, "--output-dir", out, "--no-export"]
    code, err = interrupted_train(args, out / "checkpoints" / "epoch-0001.ckpt", signal.SIGTERM)
    assert code == 130 and "Traceback" not in err, err[-2000:]
    assert "the last checkpoint is" in err and "--resume auto" in err and str(out) in err


def test_a_closed_stdout_does_not_stop_training(data, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "train.py"), *map(str, TINY), "--data-path", str(data),
               "--output-dir", str(out), "--no-export"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert (out / "final.ckpt").is_file() and b"BrokenPipe" not in err


def test_cifar10_labels_outside_0_to_9_are_refused_when_opened(tmp_path):

    root = write_cifar(tmp_path / "cifar")
    batch = root / "data_batch_2.bin"
    data = bytearray(batch.read_bytes())
    data[3073 * 17] = 12
    batch.write_bytes(bytes(data))
    one_line_error(run("train.py", "--data-path", root, "--output-dir", tmp_path / "o"),
                   "data_batch_2.bin has label byte 12 in record 17")


@pytest.mark.parametrize("args,fragments", [
    (["--lr", "nan"], ["lr and min_lr must be finite"]),
    (["--resume", "auto", "--output-dir", "/no/such/run"], ["--resume auto: /no/such/run does not exist"]),
    (["--model", "squeezenet1_1", "--bn-recalibrate", "2"], ["--bn-recalibrate:", "has no BatchNorm layers"]),
])
def test_bad_training_arguments_stop_before_any_work(data, args, fragments, tmp_path):
    one_line_error(run("train.py", *TINY, "--data-path", data, *args, cwd=tmp_path), *fragments)
    assert list(tmp_path.iterdir()) == []  # no run folder left behind


def test_resuming_a_final_checkpoint_explains_what_it_lacks(first_run, data, tmp_path):
    _, out = first_run
    result = run("train.py", *TINY, "--data-path", data, "--output-dir", tmp_path / "o",
                 "--resume", out / "final.ckpt")
    one_line_error(result, "optimizer state", "--pretrained")


def test_recipe_values_and_encodings(tmp_path):
    import argparse

    from shufflenet.engine.config import resolve_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 1e-2\nmin_lr: 5e-4\n")
    config = resolve_config(argparse.Namespace(config=str(recipe)))
    assert (config.lr, config.min_lr) == (0.01, 0.0005)
    recipe.write_bytes("lr: 0.1  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"config file {recipe} is not valid UTF-8 YAML"):
        resolve_config(argparse.Namespace(config=str(recipe)))


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from shufflenet.data.images import load_image

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    pixels = np.asarray(load_image(tmp_path / "deep.png"))
    assert pixels.max() == 255 and pixels[0, 0, 0] == 0
    assert abs(int(pixels[32, 0, 0]) - round(ramp[32, 0] / 257)) <= 1


@pytest.mark.parametrize("args,fragment", [
    (["benchmark", "--json", "/no/such/dir/b.json"], "its folder does not exist"),
    (["data-benchmark", "--workers", "0"], "--workers must be at least 1"),
])
def test_benchmark_arguments_are_checked_first(args, fragment):
    started = time.time()
    result = run(*args)
    assert result.returncode == 2 and fragment in result.stderr
    assert time.time() - started < 60


def _hashes(folder: Path) -> dict:
    return {p: sha256_file(p) for p in folder.rglob("*") if p.is_file()}


def test_planted_links_are_never_followed(data, tmp_path):
    """A link planted at a temporary or log name (in a folder others can write) is never written
    through: not by atomic writes, checkpoints (MindSpore chmods its staging file), train.log,
    or the scripts' logs."""
    from mindspore import nn

    from shufflenet.utils.checkpoint import save_checkpoint
    from shufflenet.utils.files import write_text

    victim = tmp_path / "victim.txt"
    victim.write_text("the victim's file\n")
    victim.chmod(0o644)
    shared = tmp_path / "shared"
    shared.mkdir()
    pid = os.getpid()
    for name in (f".eval.tmp-{pid}.json", f".best.tmp-{pid}.ckpt", f".best.tmp-{pid}.tmp", "eval.json"):
        (shared / name).symlink_to(victim)  # the old predictable temporary names, and the target
    write_text(shared / "eval.json", "{}\n")
    save_checkpoint(nn.Dense(2, 2), shared / "best.ckpt")
    assert victim.read_text() == "the victim's file\n" and victim.stat().st_mode & 0o777 == 0o644
    assert not (shared / "eval.json").is_symlink() and (shared / "eval.json").read_text() == "{}\n"
    read_checkpoint(shared / "best.ckpt")

    out = tmp_path / "linked"
    out.mkdir()
    (out / "train.log").symlink_to(victim)
    result = run("train.py", *TINY, "--data-path", data, "--output-dir", out)
    one_line_error(result, f"{out / 'train.log'} is a symbolic link")
    assert sorted(p.name for p in out.iterdir()) == ["train.log"]  # no lock, no config left
    logs = tmp_path / "logs" / "standalone_train"
    logs.mkdir(parents=True)
    (logs / "train.log").symlink_to(victim)
    script = subprocess.run(["bash", str(REPO / "scripts" / "run_standalone_train.sh"), "--", "--help"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert script.returncode == 2 and "train.log is a symbolic link" in script.stderr, script.stderr
    assert victim.read_text() == "the victim's file\n" and victim.stat().st_mode & 0o777 == 0o644


def test_runs_started_together_take_two_folders(data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "out"
    recipe.write_text(f"output_dir: {out}\ndata_path: {data}\n")
    command = [sys.executable, str(REPO / "train.py"), "--config", str(recipe), *map(str, TINY),
               "--no-export"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["out", "out-2"]
    assert sum(f"this one writes to {out}-2" in stdout for stdout, _ in results) == 1
    for folder in (out, tmp_path / "out-2"):
        headers = [ln for ln in (folder / "train.log").read_text().splitlines() if "steps/epoch" in ln]
        assert len(headers) == 1, (folder / "train.log").read_text()
        assert (folder / "final.ckpt").is_file() and not (folder / ".run.lock").exists()
        assert f"output_dir: {folder}\n" in (folder / "config.yaml").read_text()


def test_a_live_runs_folder_is_refused_and_a_refused_run_leaves_nothing(first_run, data, tmp_path):
    from filelock import FileLock

    from shufflenet.engine.run_folder import LOCK_FILE

    _, out = first_run
    before = _hashes(out)
    lock = FileLock(out / LOCK_FILE)
    with lock:  # a run still going in `out`
        for extra in (["--resume", "auto"], ["--overwrite"]):
            result = run("train.py", *TINY, "--data-path", data, "--output-dir", out, *extra)
            one_line_error(result, f"{out} is in use by a run that is still going", "another --output-dir")
    (out / LOCK_FILE).unlink()
    assert _hashes(out) == before

    empty_data = tmp_path / "nodata"
    empty_data.mkdir()
    for target in (tmp_path / "new" / "run", tmp_path / "existing"):
        (tmp_path / "existing").mkdir(exist_ok=True)
        result = run("train.py", *TINY, "--data-path", empty_data, "--output-dir", target)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "new").exists() and not list((tmp_path / "existing").iterdir())


class _Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing catches it."""


def _pair(model: Path) -> tuple:
    """(batch of the model's input, whether the sidecar describes the model file)."""
    sidecar = json.loads(Path(f"{model}.json").read_text())
    return sidecar["input_shape"][0], sidecar["sha256"] == sha256_file(model)


@pytest.mark.parametrize("step", ["journal", "first move", "second move", "cleanup"])
def test_an_export_killed_while_committing_leaves_one_pair(first_run, tmp_path, monkeypatch, step):
    """Killed at each step of replacing model + sidecar, the next reader (predict and eval read
    the sidecar first) sees the old pair (before the journal) or the new one (after it)."""
    from shufflenet.export import export_model
    from shufflenet.inference import load_network, read_sidecar
    from shufflenet.utils import files

    _, out = first_run
    model = _copy_export(out / "model.mindir", tmp_path / "exp")  # the old pair: any batch
    net, description = load_network(out / "final.ckpt")
    calls = []

    def killing(function, when):
        def wrapped(*args):
            calls.append(function.__name__)
            if when(args):
                raise _Killed(step)
            return function(*args)
        return wrapped

    def moves(args) -> bool:
        return calls.count("_move") == {"first move": 1, "second move": 2}.get(step)

    patches = {"journal": ("_write_journal", lambda args: True), "first move": ("_move", moves),
               "second move": ("_move", moves),
               "cleanup": ("_discard", lambda args: (args[0] / files.JOURNAL).exists())}
    name, when = patches[step]
    monkeypatch.setattr(files, name, killing(getattr(files, name), when))
    with pytest.raises(_Killed):
        export_model(net, "MINDIR", model.with_suffix(""), 1, description)
    monkeypatch.undo()
    monkeypatch.setattr(files, "pid_alive", lambda pid: False)  # its writer is gone
    read_sidecar(model)
    assert _pair(model) == ((None, True) if step == "journal" else (1, True))
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.mindir", "model.mindir.json"]


def test_a_sigkilled_export_is_cleaned_up_by_the_next_one(first_run, tmp_path):
    _, out = first_run
    model = _copy_export(out / "model.mindir", tmp_path / "exp")
    old = _hashes(model.parent)
    args = ["export", "--ckpt", out / "final.ckpt", "--file-name", model.with_suffix("")]
    proc = subprocess.Popen([sys.executable, "-m", "shufflenet", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list(model.parent.glob(".model.mindir.tmp-*/model.mindir")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=60)
    assert {p: h for p, h in _hashes(model.parent).items() if p.parent == model.parent} == old
    assert list(model.parent.glob(".model.mindir.tmp-*"))  # what the kill left
    again = run(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.mindir", "model.mindir.json"]
    assert _pair(model) == (1, True)


def test_convert_replaces_only_with_overwrite_and_never_its_input(first_run, tmp_path):
    import mindspore as ms

    from shufflenet.models import create_model

    _, out = first_run
    net = create_model("shufflenet_v1_g3_x0_5", num_classes=10, group_conv="split")
    zoo = tmp_path / "zoo.ckpt"
    ms.save_checkpoint([{"name": p.name, "data": p.data} for p in net.get_parameters()], str(zoo))
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes((out / "final.ckpt").read_bytes())
    kept, source = sha256_file(copy), sha256_file(zoo)
    one_line_error(run("convert", zoo, copy), f"{copy} already exists", "--overwrite")
    alias = tmp_path / "alias.ckpt"
    os.link(zoo, alias)
    for dst in (zoo, alias):
        one_line_error(run("convert", zoo, dst, "--overwrite"), "is the input", "never writes over")
    assert (sha256_file(copy), sha256_file(zoo)) == (kept, source)
    replaced = run("convert", zoo, copy, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sha256_file(copy) != kept and "shufflenet_v1_g3_x0_5" in replaced.stdout
    assert not list(tmp_path.glob(".*tmp-*"))
