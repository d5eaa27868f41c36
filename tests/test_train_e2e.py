"""train.py and eval.py as a user runs them: in subprocesses, on tiny generated data."""
import signal

import numpy as np
import pytest
from conftest import TINY, interrupted_train, make_image_folder, run

from shufflenet.engine.run_folder import EXPORT_FILE, EXPORT_SIDECAR, RUN_FILES
from shufflenet.utils.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), train=30, val=7)


def weights(path):
    return {k: v.asnumpy() for k, v in read_checkpoint(path).items() if hasattr(v, "asnumpy")}


def test_train_evaluate_and_export_end_to_end(data, tmp_path):
    out = tmp_path / "run"
    result = run("train.py", *TINY, "--data-path", data, "--epochs", "1", "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("final.ckpt", "best.ckpt", "model.mindir", "model.mindir.json", "metrics.csv",
                 "curves.png", "eval.json", "config.yaml", "checkpoints/epoch-0001.ckpt"):
        assert (out / name).is_file(), name
    assert "val top-1" in result.stdout and "21 samples" in result.stdout

    from_ckpt = run("eval.py", "--ckpt", out / "final.ckpt", "--data-path", data)
    assert from_ckpt.returncode == 0, from_ckpt.stderr[-3000:]
    from_mindir = run("eval.py", "--mindir", out / "model.mindir", "--data-path", data,
                      "--batch-size", "4")
    assert from_mindir.returncode == 0, from_mindir.stderr[-3000:]
    line_ckpt = from_ckpt.stdout.strip().splitlines()[-1]
    line_mindir = from_mindir.stdout.strip().splitlines()[-1]
    assert "on 21 imagenet images" in line_ckpt
    assert line_ckpt.split("top-1")[1][:7] == line_mindir.split("top-1")[1][:7]


#: Every piece of training state a resumed run must restore: AdamW moments, an accumulation
#: window that spans epochs (15 batches per epoch, 4 per update), the dynamic loss scale, the EMA;
#: and augmentation that must replay identically (mixing, erasing, RandAugment).
STATEFUL = ["--opt", "adamw", "--lr", "0.003", "--gradient-accumulation-steps", "4", "--loss-scale", "1024",
            "--loss-scale-type", "dynamic", "--clip-grad", "--ema", "--ema-decay", "0.999", "--mixup", "0.2",
            "--cutmix", "1.0", "--re-prob", "0.5", "--auto-augment", "randaug", "--bn-recalibrate", "2"]


def test_killed_run_resumes_to_the_same_weights(data, tmp_path):
    args = [*TINY, "--data-path", data, "--epochs", "2", "--eval-interval", "0", "--no-export", *STATEFUL]
    straight = run("train.py", *args, "--output-dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "straight").iterdir())  # --ema, --no-export
    assert written == sorted(set(RUN_FILES) - {EXPORT_FILE, EXPORT_SIDECAR})

    out = tmp_path / "killed"
    code, _ = interrupted_train([*args, "--output-dir", out], out / "checkpoints" / "epoch-0001.ckpt",
                                signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (out / "final.ckpt").exists(), "the run finished before it could be killed"

    resumed = run("train.py", *args, "--output-dir", out, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    for name in ("final.ckpt", "final_ema.ckpt", "checkpoints/epoch-0002.ckpt"):
        expected, got = weights(tmp_path / "straight" / name), weights(out / name)
        assert expected.keys() == got.keys()
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}: {key}")
    state = weights(out / "checkpoints" / "epoch-0002.ckpt")
    assert {"scale_sense", "accumulation_step", "ema_updates"} <= state.keys()
    assert state["accumulation_step"] == 30 and state["ema_updates"] == 7  # 2 x 15 batches, 7 updates
    assert any(key.startswith("accumulated.") for key in state)
    assert any(key.startswith("adam_m.") for key in state)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_bad_inputs_stop_before_training_with_one_line(data, tmp_path):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"\x00garbage" * 100)
    cases = [
        (["--resume", damaged], "damaged.ckpt is damaged or not a MindSpore checkpoint"),
        (["--data-path", tmp_path / "missing"], "does not exist; check --data-path"),
        (["--model", "shufflenet_v1_g5_x1_0"], "unknown model 'shufflenet_v1_g5_x1_0'"),
        (["--config", "imagenet"], "unknown recipe 'imagenet'"),
        (["--device-target", "Ascend"], "device_target Ascend is not available"),
    ]
    for extra, message in cases:
        result = run("train.py", *TINY, "--data-path", data, "--output-dir", tmp_path / "o", *extra)
        assert result.returncode == 1
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_ctrl_c_leaves_a_resumable_run_that_resume_path_continues(data, tmp_path):
    """Ctrl-C (SIGINT) mid-run exits 130 with one line naming the last checkpoint, which holds
    the training state. `--resume PATH` continues from the file named, an older one than
    `auto` would pick, into another folder: its later epochs equal the interrupted run's. That
    run keeps exactly its newest `--keep-checkpoints 2` epoch files besides best and final, and
    scores its EMA beside the weights every epoch (`val_ema_*`), best.ckpt holding the best."""
    import csv

    from shufflenet.utils.checkpoint import scalar

    common = [*TINY, "--data-path", data, "--scheduler", "constant", "--warmup-epochs", "0", "--no-export",
              "--ema", "--ema-decay", "0.9"]  # a constant lr: the resumed run may set fewer epochs
    first = tmp_path / "first"
    endless = [*common, "--epochs", "200", "--eval-interval", "0", "--keep-checkpoints", "200",
               "--output-dir", first]
    code, err = interrupted_train(endless, first / "checkpoints" / "epoch-0003.ckpt", signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err[-2000:]
    last = sorted((first / "checkpoints").iterdir())[-1]
    assert f"train.py: interrupted: the last checkpoint is {last}; continue with --resume auto " \
           f"--output-dir {first}" in err
    assert not (first / "final.ckpt").exists() and not last.name.startswith(".")
    state = read_checkpoint(last)
    assert scalar(state, "epoch") == int(last.stem.split("-")[1]) >= 3
    assert any(k.startswith("moments.") for k in state) and any(k.startswith("ema.") for k in state)

    second = tmp_path / "second"
    start = first / "checkpoints" / "epoch-0001.ckpt"
    resumed = run("train.py", *common, "--epochs", "4", "--eval-interval", "1", "--keep-checkpoints", "2",
                  "--resume", start, "--output-dir", second)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {start} at epoch 1" in resumed.stdout
    kept = sorted(p.name for p in (second / "checkpoints").iterdir())
    assert kept == ["epoch-0003.ckpt", "epoch-0004.ckpt"]  # epoch 2's was written, then pruned
    assert (second / "best.ckpt").is_file() and (second / "final.ckpt").is_file()
    expected, got = (weights(folder / "checkpoints" / "epoch-0003.ckpt") for folder in (first, second))
    assert expected.keys() == got.keys()
    for key in expected.keys() - {"learning_rate"}:  # the schedule array's length follows --epochs
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)

    with open(second / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [2, 3, 4]
    assert all(r[f"val_ema_{k}"] != "" for r in rows for k in ("top1", "top5", "loss"))
    assert resumed.stdout.count("EMA val top-1") == 3
    scores = [(max(float(r["val_top1"]), float(r["val_ema_top1"])), r) for r in rows]
    best_value, best_row = next((value, r) for value, r in scores if value == max(v for v, _ in scores))
    best = read_checkpoint(second / "best.ckpt")
    ema_won = float(best_row["val_ema_top1"]) > float(best_row["val_top1"])
    assert scalar(best, "epoch") == int(best_row["epoch"])
    assert scalar(best, "weights") == ("ema" if ema_won else "raw")
    assert scalar(best, "top1") == pytest.approx(best_value)
