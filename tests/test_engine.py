"""Training pieces: schedule, weight decay, config layering, checkpoints, a few real steps."""
import argparse
import io
import math
import os
import sys

import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic
from mindspore import nn

import shufflenet
from shufflenet.cli.common import build_train_parser
from shufflenet.data import PipelineSpec, create_dataset, open_source
from shufflenet.engine.config import list_recipes, load_yaml, recipe_path, resolve_config
from shufflenet.engine.evaluator import batch_sums, evaluate
from shufflenet.engine.optim import build_optimizer, split_decay_params
from shufflenet.engine.schedule import lr_schedule
from shufflenet.engine.trainer import Logger
from shufflenet.utils.checkpoint import CheckpointError, load_weights, read_checkpoint, save_checkpoint


def test_lr_schedule_against_hand_computed_values():
    lrs = lr_schedule(0.5, 0.0, epochs=10, steps_per_epoch=4, warmup_epochs=2)
    assert len(lrs) == 40 and lrs.dtype == np.float32
    assert lrs[0] == pytest.approx(0.5 / 8)  # warm-up starts at base / warm-up steps
    assert lrs[7] == pytest.approx(0.5)  # and peaks on its last step
    assert lrs[8] == pytest.approx(0.5)  # cosine starts at the peak
    assert lrs[8 + 16] == pytest.approx(0.25)  # half-way through the cosine
    assert lrs[-1] == pytest.approx(0.25 * (1 + math.cos(math.pi * 31 / 32)))
    assert np.all(np.diff(lrs[8:]) < 0)
    floor = lr_schedule(0.05, 0.0005, epochs=3, steps_per_epoch=5)
    assert floor[0] == pytest.approx(0.05) and floor.min() > 0.0005


def test_weight_decay_skips_batchnorm_and_bias():
    net = shufflenet.create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    decay, no_decay = split_decay_params(net)
    assert all(p.name.endswith("weight") and len(p.shape) > 1 for p in decay)
    names = {p.name for p in no_decay}
    assert "classifier.bias" in names and "first_conv.1.gamma" in names and "first_conv.1.beta" in names
    assert not any(n.endswith("weight") for n in names)
    assert len(decay) + len(no_decay) == len(net.trainable_params())
    opt = build_optimizer(net, np.full(10, 0.1, np.float32), 0.9, 4e-5)
    decays = dict(zip([p.name for p in opt.parameters], opt.decay_flags))
    assert decays["classifier.weight"] and not decays["classifier.bias"]
    assert not decays["features.0.branch_main_1.1.gamma"]


def test_a_few_steps_on_one_batch_lower_the_loss():
    ms.set_seed(0)
    source = open_source("digits", None, "train")
    dataset, _ = create_dataset(source, PipelineSpec(True, 32))
    images, labels = next(dataset.create_tuple_iterator(num_epochs=1))
    net = shufflenet.create_model("shufflenet_v1_g3_x0_25", num_classes=10)
    optimizer = build_optimizer(net, np.full(20, 0.005, np.float32), 0.9, 4e-5)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), optimizer)
    step.set_train(True)
    losses = [float(step(images, labels).asnumpy()) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses


def _args(argv):
    return build_train_parser("train.py", "").parse_args(argv)


def test_config_precedence_defaults_recipe_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nlr: 0.3\nbatch_size: 16\n")
    config = resolve_config(_args(["--config", str(recipe), "--lr", "0.2", "--no-export"]))
    assert (config.epochs, config.lr, config.batch_size, config.export) == (7, 0.2, 16, False)
    assert config.momentum == 0.9  # dataclass default
    default = resolve_config(_args([]))
    assert default.dataset == "auto" and default.data_path is None  # the bundled digits
    assert default.model == "shufflenet_v1_g3_x0_5"
    # ModelArts passes job parameters as --key=value with underscores.
    modelarts = resolve_config(_args(["--enable_modelarts=True", "--data_url=obs://b/d", "--export=false"]))
    assert (modelarts.enable_modelarts, modelarts.data_url, modelarts.export) == (True, "obs://b/d", False)


def test_config_errors_name_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nlearning_rate: 0.3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rate'\]"):
        resolve_config(_args(["--config", str(recipe)]))
    recipe.write_text("epochs: seven\n")
    with pytest.raises(ValueError, match="'epochs' must be int"):
        resolve_config(_args(["--config", str(recipe)]))
    with pytest.raises(ValueError, match="unknown recipe 'imagenet'"):
        recipe_path("imagenet")
    with pytest.raises(ValueError, match="dataset_sink needs Ascend or GPU"):
        resolve_config(_args(["--dataset-sink"]))
    with pytest.raises(ValueError, match="warmup_epochs"):
        resolve_config(_args(["--warmup-epochs", "50", "--epochs", "3"]))


def test_every_packaged_recipe_resolves():
    assert {"digits_cpu", "cifar10", "imagenet_ascend", "imagenet_gpu"} <= set(list_recipes())
    for name in list_recipes():
        load_yaml(recipe_path(name))
        config = resolve_config(argparse.Namespace(config=name))
        assert config.model in shufflenet.list_models()
    zoo = resolve_config(argparse.Namespace(config="imagenet_ascend"))
    assert (zoo.model, zoo.epochs, zoo.batch_size, zoo.lr, zoo.warmup_epochs, zoo.loss_scale,
            zoo.label_smoothing, zoo.amp_level) == ("shufflenet_v1_g3_x2_0", 250, 128, 0.5, 4, 1024,
                                                   0.1, "O3")
    fields = ("model", "model_options", "image_size", "epochs", "batch_size", "opt", "scheduler", "lr",
              "warmup_epochs", "weight_decay", "loss_scale", "label_smoothing", "amp_level", "auto_augment",
              "re_prob")
    sgd = ("momentum", "cosine")
    recipes = {  # mindcv 0.3.0's Ascend YAMLs (configs/<family>/*_ascend.yaml), key for key
        "shufflenet_v1_ascend": ("shufflenet_v1_g3_x1_0", {"pool_padding": "same", "classifier_bias": False},
                                 224, 250, 64, *sgd, 0.4, 4, 4e-5, 1024, 0.1, "O0", None, 0.0),
        "shufflenet_v2_ascend": ("shufflenet_v2_x1_0", {"unit_layout": "megvii", "pool_padding": "same",
                                                        "classifier_bias": False},
                                 224, 300, 64, *sgd, 0.4, 5, 4e-5, 1024, 0.1, "O3", None, 0.5),
        "mobilenet_v1_ascend": ("mobilenet_v1_100", {"activation": "relu"}, 224, 200, 64, *sgd,
                                0.4, 2, 3e-5, 1024, 0.1, "O2", None, 0.0),
        "mobilenet_v2_ascend": ("mobilenet_v2_100", {}, 224, 320, 256, *sgd, 0.4, 4, 4e-5, 1024,
                                0.1, "O3", None, 0.0),
        "squeezenet_ascend": ("squeezenet1_1", {"pool_rounding": "floor", "stem_padding": 1}, 224, 200, 32,
                              *sgd, 0.1, 0, 2e-4, 1024, 0.1, "O2", None, 0.25),
        "xception_ascend": ("xception", {"pool_padding": "same"}, 299, 200, 32, "sgd", "cosine", 0.045, 5,
                            1e-5, 1024, 0.1, "O2", "autoaug", 0.25),
    }
    for name, expected in recipes.items():
        config = resolve_config(argparse.Namespace(config=name))
        assert tuple(getattr(config, field) for field in fields) == expected, name


def test_checkpoints_are_atomic_verified_and_strict(tmp_path):
    net = shufflenet.create_model("shufflenet_v1_g3_x0_25", num_classes=10)
    fill_deterministic(net)
    path = save_checkpoint(net, tmp_path / "a.ckpt", {"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]  # no temporary left
    other = shufflenet.create_model("shufflenet_v1_g3_x0_25", num_classes=10)
    load_weights(other, path)
    for a, b in zip(net.get_parameters(), other.get_parameters()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())

    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "bad.ckpt").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="bad.ckpt is damaged or not a MindSpore checkpoint"):
        read_checkpoint(tmp_path / "bad.ckpt")
    (tmp_path / "short.ckpt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="short.ckpt is damaged"):
        read_checkpoint(tmp_path / "short.ckpt")

    bigger = shufflenet.create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_weights(bigger, path)
    params = read_checkpoint(path)
    del params["first_conv.0.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): first_conv.0.weight"):
        load_weights(other, params)


def test_pretrained_loading_resets_only_a_differently_sized_classifier(tmp_path):
    net = shufflenet.create_model("shufflenet_v1_g3_x0_25", num_classes=1000)
    fill_deterministic(net)
    path = save_checkpoint(net, tmp_path / "imagenet.ckpt")
    fine = shufflenet.create_model("shufflenet_v1_g3_x0_25", num_classes=10)
    reset = load_weights(fine, path, new_head="classifier.")
    assert reset == ["classifier.weight", "classifier.bias"]
    np.testing.assert_array_equal(fine.first_conv[0].weight.asnumpy(), net.first_conv[0].weight.asnumpy())


class _Batches:
    """A stand-in for a MindSpore dataset: the evaluator only iterates over (images, labels)."""

    def __init__(self, batches):
        self.batches = batches

    def create_tuple_iterator(self, num_epochs=1, output_numpy=True):
        return iter(self.batches)


def test_top1_top5_and_loss_against_a_hand_count():
    """Six classes, so top-5 can miss: logits are log-probabilities (plus a shift that a softmax
    without the max subtracted overflows on), so each loss is -log p by hand."""
    probs = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    shifted = np.log(probs) + 1000.0
    logits = np.stack([
        shifted,             # label 0: the top class
        shifted,             # label 2: third, a top-5 hit only
        shifted,             # label 5: last of six, missed by both
        shifted[::-1],       # label 5 (p 0.4 now): the top class
        np.full(6, 3.0),     # label 0 among six equal logits: ties go to the lower index
        [3, 3, 1, 1, 1, 1],  # label 0, tied with class 1 for the top: a top-1 hit
        np.full(6, 3.0),     # label 5 among six equal logits: outside the first five
    ])  # float64: exp(1000) overflows even there
    labels = np.array([0, 2, 5, 5, 0, 0, 5])
    loss, top1, top5, count = batch_sums(logits, labels)
    assert (top1, top5, count) == (4, 5, 7)  # hits: rows 0, 3, 4, 5 / rows 0, 1, 3, 4, 5
    tied = np.exp(3) / (2 * np.exp(3) + 4 * np.exp(1))
    by_hand = -np.log([0.4, 0.15, 0.05, 0.4, 1 / 6, tied, 1 / 6]).sum()
    assert loss == pytest.approx(by_hand, rel=1e-6)

    # Fewer than five classes: top-5 means every class, so every sample is a hit.
    assert list(batch_sums(np.array([[0.0, 1.0, 2.0]], np.float32), np.array([0]))[1:]) == [0, 1, 1]


def test_evaluate_weighs_every_sample_once_and_sums_ranks_before_dividing():
    """Batches of unequal size (the last one partial) and a second rank's sums: the scores are
    totals over all samples, not means of batch or rank means."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 7)
    table = {float(i): row for i, row in enumerate(logits)}  # image i is the scalar i
    images = np.arange(7, dtype=np.float32)
    dataset = _Batches([(images[:5], labels[:5]), (images[5:], labels[5:])])

    def predict(batch):
        return np.stack([table[float(i)] for i in batch])

    expected_loss = -np.log(np.exp(logits[np.arange(7), labels]) / np.exp(logits).sum(axis=1))
    hits = logits.argmax(axis=1) == labels
    scores = evaluate(predict, dataset)
    assert scores["samples"] == 7
    assert scores["top1"] == pytest.approx(hits.mean())
    assert scores["loss"] == pytest.approx(expected_loss.mean(), rel=1e-6)

    other_rank = np.array([10.0, 1.0, 3.0, 3.0])  # [loss sum, top-1 hits, top-5 hits, count]
    both = evaluate(predict, dataset, reduce=lambda totals: totals + other_rank)
    assert both["samples"] == 10
    assert both["top1"] == pytest.approx((hits.sum() + 1) / 10)
    assert both["top5"] == pytest.approx((7 + 3) / 10)  # four classes: every local sample is a top-5 hit
    assert both["loss"] == pytest.approx((expected_loss.sum() + 10.0) / 10, rel=1e-6)
    with pytest.raises(ValueError, match="yielded no samples"):
        evaluate(predict, _Batches([]))


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A run with EMA built as train.py builds one (nothing trained), on 9 validation images."""
    from conftest import make_image_folder

    from shufflenet.engine.config import Config
    from shufflenet.engine.context import Ranks
    from shufflenet.engine.trainer import build_run

    root = tmp_path_factory.mktemp("ema_run")
    data = make_image_folder(root / "data", train=6, val=3)
    config = Config(model="shufflenet_v1_g3_x0_25", data_path=str(data), image_size=32, batch_size=4,
                    epochs=4, ema=True, ema_decay=0.9, num_workers=1, cpu_kernels="off",
                    output_dir=str(root / "out"))
    run = build_run(config, Ranks(), log=lambda line: None)
    yield run
    run.folder.release()


def _set_epoch_weights(run, seed: int) -> tuple[dict, dict]:
    """Give the network and its EMA different reproducible values, as training would."""
    from shufflenet.engine.train_step import ema_parameters

    fill_deterministic(run.net, seed)
    raw = {p.name: p.asnumpy().copy() for p in run.net.get_parameters()}
    ema = {}
    for weight, average in ema_parameters(run.train_net):
        ema[weight.name] = (raw[weight.name] * 0.5 + 0.01 * (seed + 1)).astype(np.float32)
        average.set_data(ms.Tensor(ema[weight.name]))
    return raw, ema


def _network_values(run) -> dict:
    return {p.name: p.asnumpy().copy() for p in run.net.get_parameters()}


def test_ema_is_scored_beside_the_weights(ema_run):
    """`ema_*` scores are the averaged weights' (put into the network by hand here), the plain
    scores the weights', which the network holds again afterwards."""
    from shufflenet.engine.trainer import evaluate_run
    from shufflenet.inference import from_network

    run = ema_run
    raw, ema = _set_epoch_weights(run, 3)

    def score(values):
        for param in run.net.get_parameters():
            param.set_data(ms.Tensor(values[param.name]))
        dataset, _ = create_dataset(run.val_source, run.val_spec)
        return evaluate(from_network(run.net, run.description), dataset)

    by_hand = {"raw": score(raw), "ema": score(ema)}
    for param in run.net.get_parameters():
        param.set_data(ms.Tensor(raw[param.name]))
    scores = evaluate_run(run, 1)
    assert by_hand["raw"]["loss"] != pytest.approx(by_hand["ema"]["loss"], rel=1e-3)  # the two differ
    for key in ("top1", "top5", "loss"):
        assert scores[key] == pytest.approx(by_hand["raw"][key], rel=1e-6)
        assert scores[f"ema_{key}"] == pytest.approx(by_hand["ema"][key], rel=1e-6)
    assert all(np.array_equal(value, raw[name]) for name, value in _network_values(run).items())


def test_best_checkpoint_holds_the_best_epoch_of_weights_or_ema(ema_run):
    """best.ckpt is rewritten only when an epoch's better top-1 (weights or EMA) beats every
    earlier one (a tie does not), holds those values, and records epoch, score and which."""
    import csv

    from shufflenet.engine.trainer import best_score, record_epoch
    from shufflenet.utils.checkpoint import scalar

    run = ema_run
    for name in ("best.ckpt", "metrics.csv"):
        (run.out / name).unlink(missing_ok=True)
    run.best_top1 = -1.0
    # (val top-1, EMA top-1, what best.ckpt must then hold: which values, of which epoch)
    epochs = [(0.5, 0.6, ("ema", 1)), (0.6, 0.55, ("ema", 1)), (0.8, 0.7, ("raw", 3)),
              (None, None, ("raw", 3))]
    kept = {}
    for epoch, (top1, ema_top1, (which, best_epoch)) in enumerate(epochs, start=1):
        raw, ema = _set_epoch_weights(run, 10 + epoch)
        kept[epoch] = {"raw": raw, "ema": ema}
        row = {"epoch": epoch, "train_loss": 1.0, "lr": 0.1, "epoch_seconds": 1.0}
        if top1 is not None:  # an epoch between evaluations has no scores
            row.update(val_top1=top1, val_top5=1.0, val_loss=0.5, val_ema_top1=ema_top1, val_ema_top5=1.0,
                       val_ema_loss=0.4)
        record_epoch(run, epoch, row)
        saved = read_checkpoint(run.out / "best.ckpt")
        assert (scalar(saved, "epoch"), scalar(saved, "weights")) == (best_epoch, which), epoch
        for name, value in kept[best_epoch][which].items():
            np.testing.assert_array_equal(saved[name].asnumpy(), value, err_msg=f"epoch {epoch}: {name}")
        assert all(np.array_equal(value, raw[name]) for name, value in _network_values(run).items())
    assert best_score(run.out) == pytest.approx(0.8)  # what a resumed run starts from
    with open(run.out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["val_ema_top1"] for row in rows] == ["0.6", "0.55", "0.7", ""]
    assert {"val_ema_top5", "val_ema_loss"} <= rows[0].keys() and rows[0]["val_ema_loss"] == "0.4"


@pytest.mark.parametrize("top1,ema_top1,exported", [(0.5, 0.7, "ema"), (0.7, 0.5, "raw"), (0.6, 0.6, "raw")])
def test_the_export_takes_the_better_of_weights_and_ema(ema_run, monkeypatch, top1, ema_top1, exported):
    """finish() exports the network while it holds the EMA only when the EMA scored higher (a tie
    keeps the weights); final.ckpt and final_ema.ckpt hold one each whichever won."""
    import shufflenet.export
    from shufflenet.engine.trainer import finish

    run = ema_run
    raw, ema = _set_epoch_weights(run, 20)
    if not (run.out / "metrics.csv").exists():
        (run.out / "metrics.csv").write_text("epoch,train_loss,lr,epoch_seconds\n1,1.0,0.1,1.0\n")
    seen = {}

    def export_model(net, fmt, file_name, batch_size, description):
        seen.update({p.name: p.asnumpy().copy() for p in net.get_parameters()})
        return file_name

    monkeypatch.setattr(shufflenet.export, "export_model", export_model)
    finish(run, {"top1": top1, "top5": 1.0, "loss": 0.5, "ema_top1": ema_top1, "ema_top5": 1.0,
                 "ema_loss": 0.5, "samples": 9})
    expected = {"raw": raw, "ema": ema}[exported]
    assert seen.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(seen[name], value, err_msg=name)
    assert all(np.array_equal(value, raw[name]) for name, value in _network_values(run).items())
    for file, values in (("final.ckpt", raw), ("final_ema.ckpt", ema)):
        saved = read_checkpoint(run.out / file)
        assert all(np.array_equal(saved[name].asnumpy(), value) for name, value in values.items()), file
class _ClosedConsole(io.StringIO):
    """A stdout whose reader has gone (`train.py | head -1`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_console_stops_the_log_output_and_leaves_stdout_alone(tmp_path, monkeypatch):
    """The run log keeps every line; the process's stdout (file descriptor 1) is the command's to
    settle (`cli.common.console_may_close`), never the library's."""
    before = os.fstat(1)
    monkeypatch.setattr(sys, "stdout", _ClosedConsole())
    logger = Logger(tmp_path / "train.log")
    logger.start()
    logger("first")
    logger("second")
    assert not logger.console
    assert (tmp_path / "train.log").read_text() == "first\nsecond\n"
    after = os.fstat(1)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
