"""mindcv's ShuffleNetV1 checkpoints against mindcv's own networks (`pip install --no-deps mindcv==0.3.0`).

mindcv 0.3.0 holds each grouped 1x1 convolution natively (`branch_main_1.0.weight`, (mid, in/g,
1, 1)); its main branch holds per-group `convs.{k}`. The networks below are mindcv 0.3.0's, with
deterministic random weights and BatchNorm statistics; the main-branch files are the same
weights split by hand into `convs.{k}`, the layout of mindcv main's `GroupConv`.
"""
import mindspore as ms
import numpy as np
import pytest
from conftest import make_image_folder, publish_mindcv, relative_difference

from shufflenet.cli.convert import main as convert_main
from shufflenet.cli.export import main as export_main
from shufflenet.cli.predict import main as predict_main
from shufflenet.engine.config import Config
from shufflenet.engine.context import Ranks
from shufflenet.engine.trainer import build_run
from shufflenet.inference import load_network, read_sidecar
from shufflenet.lineages import convert_file, identify
from shufflenet.lineages import shufflenet_v1_mindcv as lineage
from shufflenet.utils.checkpoint import CheckpointError, read_checkpoint

mindcv = pytest.importorskip("mindcv.models.shufflenetv1")

#: mindcv's name -> ours, all eight models mindcv has.
VARIANTS = {"shufflenet_v1_g3_05": "shufflenet_v1_g3_x0_5", "shufflenet_v1_g3_10": "shufflenet_v1_g3_x1_0",
            "shufflenet_v1_g3_15": "shufflenet_v1_g3_x1_5", "shufflenet_v1_g3_20": "shufflenet_v1_g3_x2_0",
            "shufflenet_v1_g8_05": "shufflenet_v1_g8_x0_5", "shufflenet_v1_g8_10": "shufflenet_v1_g8_x1_0",
            "shufflenet_v1_g8_15": "shufflenet_v1_g8_x1_5", "shufflenet_v1_g8_20": "shufflenet_v1_g8_x2_0"}
SIZE = 64
CLASSES = 10
#: Largest |ours - mindcv| relative to the largest logit (measured: 0, bit-identical).
RELATIVE = 1e-5
MINDCV_OPTIONS = {"pool_padding": "same", "classifier_bias": False}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """name -> (mindcv network, its 0.3.0-layout checkpoint, its logits on a probe batch).

    Every other file carries training state (Adam slots, EMA, step counters), as mindcv's
    published checkpoints may; the rest are the bare `parameters_dict()`.
    """
    return publish_mindcv(mindcv, VARIANTS, tmp_path_factory.mktemp("mindcv"))


def _main_layout(src, dst, groups: int) -> None:
    """mindcv main's `convs.{k}` names for a 0.3.0 file's network entries (no training state)."""
    out = {}
    for key, value in ms.load_checkpoint(str(src)).items():
        parts = key.split(".")
        if parts[0] not in ("first_conv", "features", "classifier"):
            continue
        if parts[0] == "features" and tuple(parts[2:]) in (("branch_main_1", "0", "weight"),
                                                           ("branch_main_2", "2", "weight")):
            g = 1 if parts[1] == "0" and parts[2] == "branch_main_1" else groups
            for k, part in enumerate(np.split(value.asnumpy(), g, axis=0)):
                out[f"{key[:-len('.weight')]}.convs.{k}.weight"] = part
        else:
            out[key] = value.asnumpy()
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in out.items()], str(dst))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_mindcv_model_converts_and_matches_mindcv(published, tmp_path, capsys, name):
    inputs, files = published
    _, src, expected = files[name]
    dst = tmp_path / "converted.ckpt"
    assert convert_main([str(src), str(dst)]) == 0  # no --source: recognised from the names
    assert "from mindcv weights" in capsys.readouterr().out
    net, description = load_network(dst)
    assert (description.model, description.options, description.preprocessing) == \
        (VARIANTS[name], MINDCV_OPTIONS, "imagenet")
    dropped = ("adam_m", "adam_v", "ema", "global_step")
    assert not any(key.split(".")[0] in dropped for key in read_checkpoint(dst))
    assert relative_difference(net(inputs).asnumpy(), expected) <= RELATIVE


@pytest.mark.parametrize("name", ["shufflenet_v1_g3_10", "shufflenet_v1_g8_05"])
def test_mindcv_main_layout_loads_as_is_and_converts_to_the_same_checkpoint(published, tmp_path, name):
    inputs, files = published
    _, src, expected = files[name]
    main_file = tmp_path / f"{name}_main.ckpt"
    _main_layout(src, main_file, groups=int(name[len("shufflenet_v1_g")]))
    assert identify(read_checkpoint(main_file)) is lineage.LINEAGE_SPLIT
    net, description = load_network(main_file)  # our names already: no conversion
    assert description.model == VARIANTS[name] and description.options["classifier_bias"] is False
    assert relative_difference(net(inputs).asnumpy(), expected) <= RELATIVE

    _, from_main, used = convert_file(main_file, tmp_path / "from_main.ckpt", origin="mindcv")
    _, from_native, _ = convert_file(src, tmp_path / "from_native.ckpt")
    assert used is lineage.LINEAGE_SPLIT and from_main == from_native
    a, b = read_checkpoint(tmp_path / "from_main.ckpt"), read_checkpoint(tmp_path / "from_native.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        if hasattr(a[key], "asnumpy"):
            np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy(), err_msg=key)


def test_a_mindcv_file_loads_directly_in_every_command(published, tmp_path, capsys):
    """eval/predict (open_model), export and --pretrained convert it in memory; --resume refuses."""
    inputs, files = published
    _, src, expected = files["shufflenet_v1_g3_05"]
    net, description = load_network(src)
    assert description.model == "shufflenet_v1_g3_x0_5" and description.options == MINDCV_OPTIONS
    assert relative_difference(net(inputs).asnumpy(), expected) <= RELATIVE

    image = make_image_folder(tmp_path / "images", classes=("a",), train=1, val=0) / "train" / "a"
    assert predict_main([str(src), str(image), "--top-k", "2"]) == 0
    exported = tmp_path / "net"
    assert export_main(["--ckpt", str(src), "--file-name", str(exported), "--image-size", str(SIZE)]) == 0
    assert read_sidecar(tmp_path / "net.mindir")["options"] == MINDCV_OPTIONS

    config = Config(model="shufflenet_v1_g3_x0_5", model_options={"classifier_bias": False},
                    pretrained=str(src), image_size=32, epochs=1, batch_size=8, num_workers=1,
                    output_dir=str(tmp_path / "run"))
    run = build_run(config, Ranks(), log=lambda line: None)
    converted = read_checkpoint(convert_file(src, tmp_path / "converted.ckpt")[0])
    for param in run.net.get_parameters():  # the digits' 10 classes: the classifier is kept too
        np.testing.assert_array_equal(param.asnumpy(), converted[param.name].asnumpy(), err_msg=param.name)

    config.resume, config.pretrained = str(src), None
    with pytest.raises(CheckpointError, match="mindcv weights, not a training run of this project: it lacks "
                                              r"this project's optimizer state .*--pretrained"):
        build_run(config, Ranks(), log=lambda line: None)


def test_the_comparison_catches_groups_split_in_the_wrong_order(published, tmp_path, monkeypatch):
    """Guard for the parity tests: splitting the grouped weights wrongly shows in the logits."""
    inputs, files = published
    _, src, expected = files["shufflenet_v1_g3_05"]
    split = lineage.split_groups

    def groups_reversed(prefix, weight, groups):
        parts = split(prefix, weight, groups)
        return dict(zip(parts, reversed(list(parts.values()))))

    monkeypatch.setattr(lineage, "split_groups", groups_reversed)
    net, _ = load_network(convert_file(src, tmp_path / "wrong.ckpt")[0])
    assert relative_difference(net(inputs).asnumpy(), expected) > 1e-2


def test_foreign_files_get_one_line_about_the_missing_crc(published, tmp_path, capfd):
    _, files = published
    _, src, _ = files["shufflenet_v1_g3_05"]
    capfd.readouterr()
    read_checkpoint(src)
    err = capfd.readouterr().err
    assert "do not contain the crc code" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"note: {src} has no CRC (not written by this project): it parsed as a complete MindSpore "
        "checkpoint and its entries are checked by name and shape against the network, but flipped "
        "bytes inside a tensor would go unnoticed"]
    convert_file(src, tmp_path / "ours.ckpt")
    capfd.readouterr()
    read_checkpoint(tmp_path / "ours.ckpt")  # written here, with a CRC: checked, nothing said
    assert capfd.readouterr().err == ""


def test_mindcv_conversion_refuses_what_it_cannot_place(published, tmp_path, capsys):
    _, files = published
    _, src, _ = files["shufflenet_v1_g3_05"]
    assert convert_main([str(src), str(tmp_path / "a.ckpt"), "--model", "shufflenet_v1_g3_x0_5"]) == 0
    assert convert_main([str(src), str(tmp_path / "b.ckpt"), "--model", "shufflenet_v1_g8_x0_5"]) == 1
    assert "holds shufflenet_v1_g3_x0_5, not --model shufflenet_v1_g8_x0_5" in capsys.readouterr().err

    params = ms.load_checkpoint(str(src))
    params["features.0.branch_main_1.0.bias"] = ms.Parameter(ms.Tensor(np.zeros(12, np.float32)))
    odd = tmp_path / "odd.ckpt"
    ms.save_checkpoint([{"name": k, "data": v} for k, v in params.items()], str(odd))
    assert convert_main([str(odd), str(tmp_path / "c.ckpt")]) == 1
    assert "entries of no layer of mindcv's ShuffleNetV1: features.0.branch_main_1.0.bias" in \
        capsys.readouterr().err
    assert not (tmp_path / "c.ckpt").exists()
