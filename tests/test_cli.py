"""The shared machinery: model descriptions, the registry's tables, one inference path, one CLI layer."""
import argparse
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest

from shufflenet.cli import convert, export, predict, summary, train
from shufflenet.cli import eval as eval_cli
from shufflenet.cli.common import build_train_parser, given_options
from shufflenet.data import PRESETS
from shufflenet.data.sources import DATASETS
from shufflenet.engine.config import DEVICES, Config, resolve_config
from shufflenet.inference import Predictor
from shufflenet.models import (
    ModelDescription,
    create_model,
    describe,
    describe_checkpoint,
    list_models,
    model_entry,
    option_table,
    parameter_shapes,
    read_description,
    recognise,
)

README = Path(__file__).resolve().parents[1] / "README.md"
PARSERS = {"train": lambda: build_train_parser("train.py", ""), "eval": eval_cli.build_parser,
           "export": export.build_parser, "predict": predict.build_parser}


def test_description_is_frozen_typed_and_round_trips():
    description = describe("shufflenet_v1_g3_x0_5", 3, class_names=("a", "b", "c"),
                           options={"pool_padding": "symmetric"})
    assert (description.image_size, description.preprocessing) == (224, "imagenet")  # the registry's
    with pytest.raises(FrozenInstanceError):
        description.model = "other"
    again = read_description({"shufflenet_meta": description.to_json()})
    assert again == description and again.class_names == ("a", "b", "c")
    resized = description.replace(num_classes=5)
    assert resized.class_names == ("0", "1", "2", "3", "4")
    assert description.replace(options={"classifier_bias": False}).options == {
        "pool_padding": "symmetric", "classifier_bias": False}


@pytest.mark.parametrize("fields,message", [
    ({"num_classes": 0}, "num_classes must be a positive integer"),
    ({"image_size": 16}, "image_size must be an integer of at least 32"),
    ({"preprocessing": "sepia"}, "unknown input convention 'sepia'"),
    ({"class_names": ("a",)}, "1 class names given for a 3-class model"),
    ({"options": {"dropout": 0.2}}, r"unknown option\(s\) \['dropout'\]"),
])
def test_description_refuses_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        describe("shufflenet_v1_g3_x0_5", fields.pop("num_classes", 3), **fields)


def test_foreign_checkpoint_is_recognised_from_its_shapes_with_the_models_defaults():
    net = create_model("shufflenet_v1_g8_x1_0", num_classes=17, classifier_bias=False)
    params = {p.name: p for p in net.get_parameters()}
    found = recognise(parameter_shapes(params))
    assert found == describe("shufflenet_v1_g8_x1_0", 17, options={"classifier_bias": False})
    assert describe_checkpoint(params, num_classes=4).class_names == ("0", "1", "2", "3")
    with pytest.raises(ValueError, match="parameter names of no registered family"):
        recognise({"conv.weight": (8, 3, 3, 3)}, "x.ckpt")


def test_predictor_pads_a_fixed_batch_once_and_drops_the_padding():
    calls = []

    def run(images):  # a "file exported for batch 3": logits are the per-image pixel sums
        assert images.shape[0] == 3
        calls.append(images.shape[0])
        return images.reshape(3, -1).sum(axis=1, keepdims=True) * np.ones((1, 2), np.float32)

    predictor = Predictor(run, describe("shufflenet_v1_g3_x0_5", 2), PRESETS["imagenet"], fixed_batch=3)
    images = np.random.default_rng(0).standard_normal((7, 3, 4, 4)).astype(np.float32)
    logits = predictor(images)
    assert logits.shape == (7, 2) and len(calls) == 3
    np.testing.assert_allclose(logits[:, 0], images.reshape(7, -1).sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_network_option_is_a_flag_with_its_choices(command):
    parser = PARSERS[command]()
    base = {"train": [], "eval": ["--ckpt", "m.ckpt"], "export": ["--ckpt", "m.ckpt"],
            "predict": ["m.ckpt", "x.png"]}[command]
    for name, option in option_table().items():
        flag = "--" + name.replace("_", "-")
        if option.choices:
            args = parser.parse_args([*base, flag, str(option.choices[-1])])
            assert given_options(args) == {name: option.choices[-1]}
            with pytest.raises(SystemExit):
                parser.parse_args([*base, flag, "no-such-choice"])
        elif option.kind is bool:
            assert given_options(parser.parse_args([*base, "--no-" + name.replace("_", "-")])) == {
                name: False}
    assert given_options(parser.parse_args(base)) == {}


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_help_shows_each_flag_with_a_plain_metavar(command):
    usage = PARSERS[command]().format_usage().split("usage:", 1)[1]
    assert "MODEL_OPTION" not in usage and ":" not in usage
    assert "--in-channels IN_CHANNELS" in usage


def test_the_publishers_in_help_are_the_lineage_tables(capsys):
    from shufflenet.cli import main as cli_main
    from shufflenet.lineages import LINEAGES, ORIGINS

    text = convert.build_parser().format_help()
    table = text.split("Publishers and the families read from each:\n")[1].split("\n\n")[0]
    rows = {line.split(":")[0].strip(): line.split(":")[1].split(", ") for line in table.splitlines()}
    assert list(rows) == list(ORIGINS)
    for lineage in LINEAGES:
        assert lineage.family in [name.strip() for name in rows[lineage.origin]]
    assert cli_main.main(["--help"]) == 0
    assert ", ".join(ORIGINS) in capsys.readouterr().out


def test_eval_takes_trains_data_flags_from_the_same_config_fields(capsys):
    parser = eval_cli.build_parser()
    args = parser.parse_args(["--ckpt", "m.ckpt"])
    for key in eval_cli.DATA_FLAGS:
        assert getattr(args, key) == getattr(Config(), key), key
    for flag, bad, choices in (("--dataset", "mnist", DATASETS), ("--device-target", "TPU", DEVICES),
                               ("--preprocessing", "sepia", tuple(PRESETS))):
        with pytest.raises(SystemExit):
            parser.parse_args(["--ckpt", "m.ckpt", flag, bad])
        err = capsys.readouterr().err
        assert all(c in err for c in choices), err


def test_recipe_keys_and_flags_fill_the_network_options(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pool_padding: symmetric\nmodel_options:\n  classifier_bias: false\n")
    config = resolve_config(build_train_parser("train.py", "").parse_args(
        ["--config", str(recipe), "--group-conv", "split"]))
    assert config.model_options == {"pool_padding": "symmetric", "classifier_bias": False,
                                    "group_conv": "split"}
    recipe.write_text("model_options:\n  dropout: 0.2\n")
    with pytest.raises(ValueError, match="unknown network option 'dropout'"):
        resolve_config(argparse.Namespace(config=str(recipe)))
    with pytest.raises(ValueError, match="lr and min_lr must be finite"):
        resolve_config(argparse.Namespace(config="digits_cpu", lr=float("nan")))


@pytest.mark.parametrize("module,argv,prog", [
    (train, ["--warmup-epochs", "50", "--epochs", "3"], "train.py"),
    (eval_cli, ["--ckpt", "missing.ckpt"], "eval.py"),
    (export, ["--ckpt", "missing.ckpt"], "shufflenet export"),
    (predict, ["missing.ckpt", "x.png"], "shufflenet predict"),
    (convert, ["missing.pth", "out.ckpt"], "shufflenet convert"),
])
def test_every_command_reports_errors_as_one_line_with_one_prefix(module, argv, prog, capsys, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert module.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{prog}: error: ") and len(err.splitlines()) == 1, err


def readme_summary_rows() -> dict[str, str]:
    """Model name -> its row of the README's "### Summary" table, in the README's order."""
    section = README.read_text().split("\n### Summary\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {row.split("`")[1]: row for row in rows}


def test_readme_summary_lists_every_model_once_in_the_commands_order():
    """The table `shufflenet summary` prints has one row per registered model, sorted."""
    rows = readme_summary_rows()
    assert list(rows) == list_models()
    assert "`shufflenet_v1_g8_x1_0` | g8 1x, channels 24, 384, 768, 1536 | 2,433,768 |" in rows[
        "shufflenet_v1_g8_x1_0"]  # Megvii's published count, independent of the command
    assert model_entry("shufflenet_v1_g8_x1_0").published_mflops == (138, "Megvii")


@pytest.mark.parametrize("name", list_models())
def test_readme_summary_row_is_what_the_command_prints(name):
    """Every figure of the README's table (architecture, parameters, input, MFLOPs, published)
    as the command measures it: one build and one PyNative forward pass per model, no graph."""
    row = summary.format_markdown(summary.summary_rows(names=[name])).splitlines()[2]
    assert readme_summary_rows().get(name) == row


def test_model_options_of_a_description_build_the_network_it_describes():
    description = ModelDescription("shufflenet_v1_g3_x0_5", 5, 64, "megvii",
                                   {"pool_padding": "symmetric", "classifier_bias": False})
    from shufflenet.models import build_network

    net = build_network(description)
    assert net.pool_padding == "symmetric" and not net.classifier_bias
    assert net.classifier.weight.shape == (5, 480)
