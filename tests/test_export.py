"""Export: every format reloads and reproduces the checkpoint network; refusals come first."""
import importlib.util
import json

import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic
from mindspore import nn

from shufflenet.cli.export import main as export_main
from shufflenet.data.presets import get_preprocessing
from shufflenet.export import ExportVerificationError, export_model, probe_batch, verify_export
from shufflenet.inference import open_export, read_sidecar, run_exported, run_exported_outputs
from shufflenet.models import (
    META_KEY,
    ModelDescription,
    create_model,
    family_of,
    feature_info,
    list_families,
)
from shufflenet.models.squeezenet import CeilMaxPool
from shufflenet.utils.checkpoint import save_checkpoint

MODEL = "shufflenet_v1_g3_x0_5"
SIZE = 64
CLASSES = ["cat", "dog", "fox", "owl", "yak"]
#: Largest |exported - network| relative to the largest logit (observed: ~1e-7 MINDIR, ~1e-6 ONNX).
RELATIVE = 1e-5
#: The same for ShuffleNetV2+ with BatchNorm folded: its SE gates amplify rounding (observed 2.5e-5).
RELATIVE_FOLDED_SE = 1e-4


def _net(pool_padding: str = "same", seed: int = 0) -> nn.Cell:
    net = create_model(MODEL, num_classes=len(CLASSES), pool_padding=pool_padding,
                       classifier_bias=pool_padding == "same")
    fill_deterministic(net, seed)
    net.set_train(False)
    return net


def _description(pool_padding: str = "same", preprocessing: str = "imagenet") -> ModelDescription:
    options = {"pool_padding": pool_padding, "classifier_bias": pool_padding == "same"}
    return ModelDescription(MODEL, len(CLASSES), SIZE, preprocessing, options, CLASSES)


def _relative_diff(net: nn.Cell, path, fmt: str, batch: int, preprocessing: str = "imagenet",
                   size: int = SIZE) -> float:
    inputs = probe_batch(batch, size, get_preprocessing(preprocessing), seed=7)
    expected = net(ms.Tensor(inputs)).asnumpy()
    actual = run_exported(path, fmt, inputs)
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The networks, and their exports in each format, shared by the round-trip tests."""
    folder = tmp_path_factory.mktemp("exported")
    nets = {"same": _net("same"), "symmetric": _net("symmetric")}
    files = {
        "mindir_fixed": export_model(nets["symmetric"], "MINDIR", folder / "fixed", 3,
                                     _description("symmetric", preprocessing="megvii")),
        "mindir_dynamic": export_model(nets["symmetric"], "MINDIR", folder / "dynamic.mindir", 0,
                                       _description("symmetric")),
    }
    if importlib.util.find_spec("onnxruntime"):
        for padding, net in nets.items():
            files[f"onnx_{padding}"] = export_model(net, "ONNX", folder / padding, 2, _description(padding))
    return nets, files


def test_mindir_fixed_batch_round_trip(exported):
    nets, files = exported
    assert files["mindir_fixed"].name == "fixed.mindir"
    assert _relative_diff(nets["symmetric"], files["mindir_fixed"], "MINDIR", 3, "megvii") < RELATIVE


def test_dynamic_batch_mindir_runs_at_two_batch_sizes(exported):
    nets, files = exported
    graph = nn.GraphCell(ms.load(str(files["mindir_dynamic"])))
    for batch in (1, 4):
        inputs = probe_batch(batch, SIZE, get_preprocessing("imagenet"), seed=batch)
        expected = nets["symmetric"](ms.Tensor(inputs)).asnumpy()
        actual = graph(ms.Tensor(inputs)).asnumpy()
        assert actual.shape == (batch, len(CLASSES))
        assert np.abs(actual - expected).max() / np.abs(expected).max() < RELATIVE
    assert read_sidecar(files["mindir_dynamic"])["input_shape"] == [None, 3, SIZE, SIZE]


@pytest.mark.parametrize("pool_padding", ["same", "symmetric"])
def test_onnx_round_trip(exported, pool_padding):
    pytest.importorskip("onnxruntime")
    nets, files = exported
    path = files[f"onnx_{pool_padding}"]
    assert _relative_diff(nets[pool_padding], path, "ONNX", 2) < RELATIVE
    assert read_sidecar(path)["verification"]["runtime"] == "onnxruntime"


def test_export_leaves_the_network_as_it_was(exported):
    net = exported[0]["symmetric"]  # exported through the stand-in pools
    assert not net.training
    assert type(net.maxpool.pool) is nn.MaxPool2d
    assert all(type(block.branch_proj.pool) is nn.AvgPool2d for block in net.features if block.stride == 2)


EVERY_FAMILY = [
    ("shufflenet_v1_g3_x0_25", {}),  # split GroupConv, 'same' pools
    ("shufflenet_v2_x0_5", {}),  # torchvision's units and symmetric pool
    ("shufflenet_v2_x0_5", {"unit_layout": "megvii", "pool_padding": "same", "classifier_bias": False}),
    ("shufflenet_v2_plus_small", {}),
    ("mobilenet_v1_025", {"activation": "relu6"}),
    ("mobilenet_v2_035", {}),
    ("squeezenet1_1", {}),  # ceil-mode pools as zero padding + floor pools
    ("xception", {"pool_padding": "symmetric"}),
]
#: Export input side where it is not `SIZE`: at 64 px every SqueezeNet 1.1 pool gets an odd side
#: (31, 15, 7), where ceil and floor agree and a floor-pool export would pass; at 66 px the
#: sides are 32, 16, 8 and each ceil-mode pool keeps a row and column more (4x4 final maps, not 3x3).
EXPORT_SIZE = {"squeezenet1_1": 66}


def _ceil_pool_input_sides(net: nn.Cell, size: int) -> list[int]:
    """The input side of each `CeilMaxPool` of a SqueezeNet at `size` px, from its layers."""
    sides = []
    for cell in net.features:
        if isinstance(cell, nn.Conv2d):
            padding = cell.padding if isinstance(cell.padding, int) else cell.padding[0]
            size = (size + 2 * padding - cell.kernel_size[0]) // cell.stride[0] + 1
        elif isinstance(cell, CeilMaxPool):
            sides.append(size)
            size = -(-(size - 3) // 2) + 1
    return sides


def test_the_squeezenet_export_size_makes_ceil_and_floor_pools_differ():
    """A ceil-mode 3x3/s2 pool differs from a floor-mode one only on an even input side."""
    net = create_model("squeezenet1_1", num_classes=len(CLASSES))
    assert _ceil_pool_input_sides(net, SIZE) == [31, 15, 7]  # all odd: nothing to tell them apart
    assert _ceil_pool_input_sides(net, EXPORT_SIZE["squeezenet1_1"]) == [32, 16, 8]


def test_the_export_cases_cover_every_family():
    assert sorted({family_of(name).name for name, _ in EVERY_FAMILY}) == sorted(list_families())


@pytest.mark.parametrize("name,options", EVERY_FAMILY)
def test_every_family_exports_dynamic_mindir_and_onnx(tmp_path, name, options):
    net = create_model(name, num_classes=len(CLASSES), **options)
    fill_deterministic(net)
    net.set_train(False)
    size = EXPORT_SIZE.get(name, SIZE)
    description = ModelDescription(name, len(CLASSES), size, "imagenet", options, CLASSES)
    limit = RELATIVE_FOLDED_SE if name.startswith("shufflenet_v2_plus") else RELATIVE
    mindir = export_model(net, "MINDIR", tmp_path / "net.mindir", 0, description)
    for batch in (1, 3):
        assert _relative_diff(net, mindir, "MINDIR", batch, size=size) < limit
    unfolded = export_model(net, "MINDIR", tmp_path / "unfolded.mindir", 2, description, fold_bn=False)
    assert _relative_diff(net, unfolded, "MINDIR", 2, size=size) < RELATIVE
    if importlib.util.find_spec("onnxruntime"):
        onnx = export_model(net, "ONNX", tmp_path / "net.onnx", 2, description)  # BatchNorm kept
        assert _relative_diff(net, onnx, "ONNX", 2, size=size) < RELATIVE
        folded = export_model(net, "ONNX", tmp_path / "folded.onnx", 2, description, fold_bn=True)
        assert _relative_diff(net, folded, "ONNX", 2, size=size) < limit
        folds = [read_sidecar(path)["verification"]["batchnorm_folded"] for path in (mindir, onnx, folded)]
        assert folds == [True, False, True]


def test_air_is_refused_off_ascend_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="AIR export needs the Ascend backend"):
        export_model(_net(), "AIR", tmp_path / "net", 1, _description())
    # The checkpoint does not even exist: the format is refused before it is read.
    code = export_main(["--ckpt", str(tmp_path / "missing.ckpt"), "--format", "AIR"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "Ascend" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["--format", "ONNX", "--batch-size", "dynamic"], "dynamic batch"),
    (["--image-size", "16"], "at least 32"),
    (["--format", "MINDIR", "--batch-size", "-2"], "batch-size"),
])
def test_bad_requests_are_one_line_errors(tmp_path, capsys, args, message):
    assert export_main(["--ckpt", str(tmp_path / "missing.ckpt"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_sidecar_records_model_input_preprocessing_and_classes(exported):
    path = exported[1]["mindir_fixed"]
    sidecar = json.loads(path.with_name("fixed.mindir.json").read_text())
    assert sidecar["file"] == path.name and sidecar["format"] == "MINDIR"
    assert sidecar["model"] == MODEL and sidecar["num_classes"] == len(CLASSES)
    assert sidecar["options"] == {"pool_padding": "symmetric", "classifier_bias": False}
    assert sidecar["input_shape"] == [3, 3, SIZE, SIZE] and sidecar["image_size"] == SIZE
    assert sidecar["class_names"] == CLASSES
    pre = sidecar["preprocessing"]
    assert pre["name"] == "megvii" and pre["bgr"] is True and pre["channel_order"] == "BGR"
    assert pre["mean"] == [0.0, 0.0, 0.0] and pre["std"] == [1.0, 1.0, 1.0]
    assert sidecar["verification"]["verified"] is True
    assert sidecar["verification"]["max_relative_diff"] < RELATIVE


def test_verification_fails_loudly_on_a_different_network(exported):
    with pytest.raises(ExportVerificationError, match="differs from the network"):
        verify_export(_net("symmetric", seed=1), exported[1]["mindir_fixed"], "MINDIR", (3,), SIZE,
                      get_preprocessing("megvii"))


def test_cli_exports_a_checkpoint_using_its_description(tmp_path, capsys):
    net = _net("symmetric")
    ckpt = save_checkpoint(net, tmp_path / "run.ckpt",
                           extra={META_KEY: _description("symmetric", "megvii").to_json()})
    assert export_main(["--ckpt", str(ckpt), "--batch-size", "2",
                        "--file-name", str(tmp_path / "out" / "model")]) == 0
    assert "verified" in capsys.readouterr().out
    sidecar = read_sidecar(tmp_path / "out" / "model.mindir")
    assert sidecar["preprocessing"]["name"] == "megvii" and sidecar["image_size"] == SIZE
    assert sidecar["class_names"] == CLASSES


def test_cli_exports_a_foreign_checkpoint_recognised_from_its_shapes(tmp_path):
    net = _net("same")
    ckpt = tmp_path / "zoo.ckpt"
    ms.save_checkpoint(net, str(ckpt), append_dict={"global_step": 10, "learning_rate": 0.5})
    assert export_main(["--ckpt", str(ckpt), "--image-size", str(SIZE)]) == 0
    sidecar = read_sidecar(tmp_path / "zoo.mindir")
    assert sidecar["model"] == MODEL and sidecar["preprocessing"]["name"] == "imagenet"
    assert sidecar["options"]["classifier_bias"] is True


def test_cli_class_names_and_fold_bn_flags(tmp_path, capsys):
    """`--class-names FILE` puts the file's names in the sidecar (a wrong count is refused);
    `--fold-bn` on an ONNX export (which keeps BatchNorm by default) leaves no BatchNorm node
    and computes what the unfolded network does."""
    onnx = pytest.importorskip("onnx")
    net = create_model("shufflenet_v1_g3_x0_25", num_classes=len(CLASSES))
    fill_deterministic(net)
    net.set_train(False)
    description = ModelDescription("shufflenet_v1_g3_x0_25", len(CLASSES), 32, "imagenet", {}, CLASSES)
    ckpt = save_checkpoint(net, tmp_path / "run.ckpt", extra={META_KEY: description.to_json()})
    names = ["ant", "bee", "cow", "doe", "elk"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n\n")
    assert export_main(["--ckpt", str(ckpt), "--format", "ONNX", "--batch-size", "2", "--fold-bn",
                        "--class-names", str(tmp_path / "names.txt"),
                        "--file-name", str(tmp_path / "folded")]) == 0
    assert "BatchNorm folded" in capsys.readouterr().out.splitlines()[-1]
    folded = tmp_path / "folded.onnx"
    sidecar = read_sidecar(folded)
    assert sidecar["class_names"] == names and sidecar["verification"]["batchnorm_folded"] is True
    ops = {node.op_type for node in onnx.load(str(folded)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops, sorted(ops)
    inputs = probe_batch(2, 32, get_preprocessing("imagenet"), seed=3)
    unfolded = net(ms.Tensor(inputs)).asnumpy()
    assert np.abs(run_exported(folded, "ONNX", inputs) - unfolded).max() < RELATIVE * np.abs(unfolded).max()

    (tmp_path / "four.txt").write_text("\n".join(names[:4]))
    assert export_main(["--ckpt", str(ckpt), "--class-names", str(tmp_path / "four.txt")]) == 1
    assert "--class-names has 4 names for a 5-class model" in capsys.readouterr().err


#: One backbone export per family (issue 25), to ONNX; the CLI test below exports a dynamic-batch
#: MINDIR with symmetric pools (the portable stand-ins).
BACKBONE_EXPORTS = [(name, options, "ONNX") for name, options in EVERY_FAMILY if "unit_layout" not in options]


def test_the_backbone_export_cases_cover_every_family():
    assert sorted({family_of(name).name for name, _, _ in BACKBONE_EXPORTS}) == sorted(list_families())


@pytest.mark.parametrize("name,options,fmt", BACKBONE_EXPORTS)
def test_every_family_exports_its_backbone_with_one_verified_output_per_map(tmp_path, name, options, fmt):
    if fmt == "ONNX" and not importlib.util.find_spec("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    net = create_model(name, num_classes=len(CLASSES), **options)
    fill_deterministic(net)
    net.set_train(False)
    description = ModelDescription(name, len(CLASSES), SIZE, "imagenet", options, CLASSES)
    batch = 0 if fmt == "MINDIR" else 2
    path = export_model(net, fmt, tmp_path / "backbone", batch, description, features_only=True)
    sidecar = read_sidecar(path)
    info = feature_info(name)
    assert sidecar["features_only"] and sidecar["verification"]["verified"]
    assert [{k: o[k] for k in ("name", "num_chs", "reduction")} for o in sidecar["outputs"]] == [
        {"name": tap["module"], "num_chs": tap["num_chs"], "reduction": tap["reduction"]} for tap in info]
    inputs = probe_batch(3 if fmt == "MINDIR" else 2, SIZE, get_preprocessing("imagenet"), seed=5)
    outputs = run_exported_outputs(path, fmt, inputs)
    assert [out.shape[1] for out in outputs] == [tap["num_chs"] for tap in info]
    assert len(outputs) == len(info) and outputs[0].shape[0] == len(inputs)


def test_cli_exports_the_maps_of_out_indices(tmp_path, capsys):
    net = _net("symmetric")
    ckpt = save_checkpoint(net, tmp_path / "run.ckpt", extra={META_KEY: _description("symmetric").to_json()})
    assert export_main(["--ckpt", str(ckpt), "--batch-size", "dynamic", "--features-only",
                        "--out-indices", "2", "4", "--file-name", str(tmp_path / "neck")]) == 0
    assert "2 maps" in capsys.readouterr().out
    sidecar = read_sidecar(tmp_path / "neck.mindir")
    assert sidecar["out_indices"] == [2, 4]
    outputs = [(o["name"], o["reduction"]) for o in sidecar["outputs"]]
    assert outputs == [("features.3", 8), ("features.15", 32)]
    assert export_main(["--ckpt", str(ckpt), "--out-indices", "1"]) != 0
    assert "--features-only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is a backbone export"):  # maps are no class scores
        open_export(tmp_path / "neck.mindir")
