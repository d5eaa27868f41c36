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
