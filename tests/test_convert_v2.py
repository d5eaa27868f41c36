"""Importing published ShuffleNetV2 and V2+ weights: torchvision's and Megvii's PyTorch releases and
the MindSpore model zoo's checkpoints.

The PyTorch references are the publishers' topologies rebuilt from torch primitives
(`shufflenet.lineages.torch_shufflenet_v2_torchvision`, `torch_shufflenet_v2_megvii`) with random
weights and BatchNorm statistics, saved as each publisher releases them. torchvision's rebuild is
tied to torchvision's own code in `test_publisher_code.py`; Megvii's code cannot run here and no
output of it is stored, so Megvii's rebuild is checked against our network alone. `shufflenet convert`
compares in graph mode (its printed relative difference is checked here too); the tests compare
again in PyNative mode, which needs no graph compile per network.
"""
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from conftest import (
    convert_and_check,
    fill_deterministic,
    mindspore_names,
    randomise_torch,
    relative_logit_difference,
    torch_names,
)

from shufflenet.cli.convert import main as convert_main
from shufflenet.data.presets import get_preprocessing
from shufflenet.engine.context import pynative_mode
from shufflenet.export import probe_batch
from shufflenet.inference import load_network
from shufflenet.lineages import LINEAGES, convert_file, guess_origins, identify, torch_reference
from shufflenet.lineages import shufflenet_v1_megvii as v1_megvii
from shufflenet.lineages import shufflenet_v1_mindcv as v1_mindcv
from shufflenet.lineages import shufflenet_v1_mindspore as v1_zoo
from shufflenet.lineages import shufflenet_v2_megvii as megvii
from shufflenet.lineages import shufflenet_v2_mindcv as mindcv
from shufflenet.lineages import shufflenet_v2_mindspore as zoo
from shufflenet.lineages import shufflenet_v2_torchvision as torchvision
from shufflenet.models import META_KEY, create_model, describe

torch = pytest.importorskip("torch")
torch_tv = pytest.importorskip("shufflenet.lineages.torch_shufflenet_v2_torchvision")
torch_megvii = pytest.importorskip("shufflenet.lineages.torch_shufflenet_v2_megvii")
torch_v1 = pytest.importorskip("shufflenet.lineages.torch_shufflenet_v1_megvii")

SIZE = 64
CLASSES = 10
#: Largest |ours - publisher's| logit relative to the largest logit (measured: <= 3e-6).
RELATIVE = 1e-5
WIDTHS = {"shufflenet_v2_x0_5": 0.5, "shufflenet_v2_x1_0": 1.0, "shufflenet_v2_x1_5": 1.5,
          "shufflenet_v2_x2_0": 2.0}
#: publisher -> (its ShuffleNetV2 of a width, file name, what it saves, our options, preprocessing).
PUBLISHERS = {
    "torchvision": (torch_tv.build_torchvision_shufflenet_v2, "shufflenetv2_x{width}.pth",
                    lambda model: model.state_dict(),
                    {"unit_layout": "torchvision", "pool_padding": "symmetric", "classifier_bias": True},
                    "imagenet"),
    "megvii": (torch_megvii.build_megvii_shufflenet_v2, "ShuffleNetV2.{width}x.pth.tar",
               torch_megvii.megvii_checkpoint,
               {"unit_layout": "megvii", "pool_padding": "symmetric", "classifier_bias": False}, "megvii"),
}
LINEAGE_MODULES = {"torchvision": torchvision, "megvii": megvii}


def _publish(folder, publisher: str, width: float):
    """The publisher's network of `width`, randomised, and its file as the publisher releases it."""
    build, file_name, release, _, _ = PUBLISHERS[publisher]
    model = randomise_torch(build(width, CLASSES))
    path = folder / file_name.format(width=width)
    torch.save(release(model), path)
    return model, path


@pytest.mark.parametrize("publisher", list(PUBLISHERS))
@pytest.mark.parametrize("name", list(WIDTHS))
def test_v2_import_matches_the_publishers_network(tmp_path, capsys, publisher, name):
    model, src = _publish(tmp_path, publisher, WIDTHS[name])
    dst = tmp_path / "converted.ckpt"
    convert_and_check(src, dst, capsys, SIZE, RELATIVE)
    *_, options, preprocessing = PUBLISHERS[publisher]
    assert relative_logit_difference(SIZE, model, dst, preprocessing) <= RELATIVE
    _, description = load_network(dst)
    assert (description.model, description.options, description.preprocessing, description.num_classes) == \
        (name, options, preprocessing, CLASSES)


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_v2_plus_import_matches_megviis_network(tmp_path, capsys, size):
    # Variance gain 1, not He's 2: with 2 the random network is chaotic, its 12 SE gates
    # x * hsigmoid(g) see |g| in the hundreds (a trained one's are a few units), and PyTorch's own
    # float32 logits differ from its float64 ones by up to 6e-5 relative; with 1 that is < 2e-6.
    model = randomise_torch(torch_megvii.build_megvii_shufflenet_v2_plus(size, CLASSES), gain=1.0)
    src, dst = tmp_path / f"ShuffleNetV2+.{size.capitalize()}.pth.tar", tmp_path / "converted.ckpt"
    torch.save(torch_megvii.megvii_checkpoint(model), src)
    convert_and_check(src, dst, capsys, SIZE, RELATIVE)
    assert relative_logit_difference(SIZE, model, dst, "megvii") <= RELATIVE
    _, description = load_network(dst)
    assert (description.model, description.options, description.preprocessing, description.num_classes) == \
        (f"shufflenet_v2_plus_{size}", {}, "megvii", CLASSES)


@pytest.mark.parametrize("publisher,wrong", [("torchvision", "megvii"), ("megvii", "torchvision")])
def test_the_comparison_catches_a_wrong_shuffle(tmp_path, monkeypatch, capsys, publisher, wrong):
    """At 0.5x both unit layouts have the same shapes: only the outputs tell a wrong one."""
    model, src = _publish(tmp_path, publisher, 0.5)
    module = LINEAGE_MODULES[publisher]
    monkeypatch.setattr(module, "OPTIONS", {**module.OPTIONS, "unit_layout": wrong})
    assert convert_main([str(src), str(tmp_path / "checked.ckpt"), "--check-size", str(SIZE)]) == 1
    assert "differs from the PyTorch network beyond" in capsys.readouterr().err
    assert not (tmp_path / "checked.ckpt").exists()
    convert_file(src, tmp_path / "wrong.ckpt")
    assert relative_logit_difference(SIZE, model, tmp_path / "wrong.ckpt", PUBLISHERS[publisher][-1]) > 1e-2


def _zoo_checkpoint(tmp_path):
    """A checkpoint as the model zoo writes it: `classifier.0.weight`, Momentum's state, counters."""
    net = create_model("shufflenet_v2_x1_0", num_classes=CLASSES, **zoo.OPTIONS)
    fill_deterministic(net, 5)
    net.set_train(False)
    entries = [{"name": "classifier.0.weight" if p.name == "classifier.weight" else p.name, "data": p.data}
               for p in net.get_parameters()]
    entries += [{"name": f"moments.{p.name}", "data": p.data} for p in net.trainable_params()]
    entries += [{"name": "learning_rate", "data": ms.Tensor(np.array([0.5], np.float32))}]
    path = tmp_path / "shufflenet-rank0-250_1251.ckpt"
    ms.save_checkpoint(entries, str(path), append_dict={"epoch_num": 250, "step_num": 312750})
    return net, path


def test_zoo_checkpoint_loads_directly_and_imports_with_identical_outputs(tmp_path, capsys):
    zoo_net, src = _zoo_checkpoint(tmp_path)
    inputs = ms.Tensor(probe_batch(2, SIZE, get_preprocessing("imagenet"), seed=4))
    with pynative_mode():
        expected = zoo_net(inputs).asnumpy()
        net, description = load_network(src)  # renamed in memory
        np.testing.assert_array_equal(net(inputs).asnumpy(), expected)
    assert (description.model, description.options, description.preprocessing) == \
        ("shufflenet_v2_x1_0", zoo.OPTIONS, "imagenet")

    dst = tmp_path / "imported.ckpt"
    assert convert_main([str(src), str(dst)]) == 0  # no --source: recognised from the names
    assert "from mindspore weights" in capsys.readouterr().out
    with pynative_mode():
        imported, description = load_network(dst)
        np.testing.assert_array_equal(imported(inputs).asnumpy(), expected)
    assert description.options == zoo.OPTIONS
    saved = ms.load_checkpoint(str(dst))
    assert "classifier.weight" in saved
    assert not any(key.startswith(("moments.", "classifier.0", "learning_rate")) for key in saved)


@pytest.mark.parametrize("publisher,extra", [
    ("torchvision", "stage2.4.branch2.0.weight"),  # stage 2 has 4 units
    ("torchvision", "aux.weight"),
    ("megvii", "module.features.1.branch_proj.0.weight"),  # a stride-1 unit has no projection
])
def test_entries_of_no_layer_are_refused_by_name(tmp_path, capsys, publisher, extra):
    _, src = _publish(tmp_path, publisher, 0.5)
    state = torch.load(src, weights_only=True)
    state.get("state_dict", state)[extra] = torch.zeros(3)
    torch.save(state, src)
    assert convert_main([str(src), str(tmp_path / "out.ckpt")]) == 1
    network = {"torchvision": "torchvision's", "megvii": "Megvii's"}[publisher]
    assert f"entries of no layer of {network} ShuffleNetV2: {extra.removeprefix('module.')}" in \
        capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


def test_each_publishers_names_pick_its_lineage():
    """V2's signatures fit neither V1's files nor each other's, whatever the order of `LINEAGES`."""
    files = {
        "torchvision": (torch_names(torch_tv.build_torchvision_shufflenet_v2(1.0)), torchvision.LINEAGE),
        "megvii v2": (torch_names(torch_megvii.build_megvii_shufflenet_v2(1.0)), megvii.LINEAGE),
        "megvii v2+": (torch_names(torch_megvii.build_megvii_shufflenet_v2_plus("small")),
                       megvii.LINEAGE_PLUS),
        "mindcv v2": (mindspore_names("shufflenet_v2_x1_0", **mindcv.OPTIONS), mindcv.LINEAGE),
        "zoo v2": (mindspore_names("shufflenet_v2_x1_0", {"classifier.weight": "classifier.0.weight"},
                                   **zoo.OPTIONS), zoo.LINEAGE),
        "megvii v1": (torch_names(torch_v1.build_megvii_shufflenet_v1(3, 0.5)), v1_megvii.LINEAGE),
        "zoo v1": (mindspore_names("shufflenet_v1_g3_x0_5", group_conv="split"), v1_zoo.LINEAGE),
        "mindcv v1 main": (mindspore_names("shufflenet_v1_g3_x0_5", group_conv="split",
                                           classifier_bias=False), v1_mindcv.LINEAGE_SPLIT),
    }
    for kind, (names, expected) in files.items():
        found = [lineage for lineage in LINEAGES if lineage.matches(names)]
        assert found[0] is expected, kind
        if expected.family != "shufflenet_v1":
            assert found == [expected], kind
    assert identify(files["mindcv v2"][0]) is mindcv.LINEAGE and identify(files["zoo v2"][0]) is zoo.LINEAGE
    ours = {**mindspore_names("shufflenet_v2_x1_0", classifier_bias=False), META_KEY: "{}"}
    assert identify(ours) is None
    assert guess_origins(Path("w.pth")) == guess_origins(Path("w.pth.tar")) == \
        ("megvii", "torchvision", "timm")


def test_the_default_pytorch_peer_is_megviis():
    """Benchmarks build the family's `published_options` (Megvii's network) and this peer."""
    assert isinstance(torch_reference(describe("shufflenet_v2_x1_0", CLASSES)),
                      torch_megvii.MegviiShuffleNetV2)
    assert isinstance(torch_reference(describe("shufflenet_v2_plus_small", CLASSES)),
                      torch_megvii.MegviiShuffleNetV2Plus)
