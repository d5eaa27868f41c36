"""Importing published weights: Megvii's PyTorch release and the MindSpore tutorial/zoo checkpoints.

The PyTorch reference is Megvii's topology built from torch primitives
(`shufflenet.lineages.torch_shufflenet_v1_megvii`) with random weights and BatchNorm statistics.
Megvii's own code cannot run here and no output of it is stored, so nothing ties this rebuild to
it but review (see `test_publisher_code.py`).
"""
import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic, randomise_torch

from shufflenet.cli.convert import main as convert_main
from shufflenet.data.presets import get_preprocessing
from shufflenet.export import probe_batch
from shufflenet.inference import load_network
from shufflenet.lineages import convert_file
from shufflenet.lineages import shufflenet_v1_megvii as convert
from shufflenet.models import channel_shuffle, create_model

torch = pytest.importorskip("torch")
torch_megvii = pytest.importorskip("shufflenet.lineages.torch_shufflenet_v1_megvii")

SIZE = 64
CLASSES = 10


def _megvii_model(groups: int, seed: int = 0):
    """Megvii's network with random weights and BatchNorm statistics, in inference mode."""
    return randomise_torch(torch_megvii.build_megvii_shufflenet_v1(groups, 0.5, num_classes=CLASSES), seed)


def _megvii_file(tmp_path, groups: int):
    model = _megvii_model(groups)
    path = tmp_path / f"shufflenetv1_group{groups}_0.5x.pth.tar"
    torch.save(torch_megvii.megvii_checkpoint(model), path)
    return model, path


def _compare(model, ckpt) -> float:
    """Largest |MindSpore - PyTorch| logit on BGR 0..255 inputs, relative to the largest logit."""
    net, _ = load_network(ckpt)
    inputs = probe_batch(2, SIZE, get_preprocessing("megvii"), seed=3)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    actual = net(ms.Tensor(inputs)).asnumpy()
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_shuffle_permutation_is_the_networks_channel_shuffle():
    x = np.arange(2 * 12 * 2 * 2, dtype=np.float32).reshape(2, 12, 2, 2)
    perm = convert.shuffle_permutation(12, 3)
    assert perm.tolist() == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    np.testing.assert_array_equal(channel_shuffle(ms.Tensor(x), 3).asnumpy(), x[:, perm])


@pytest.mark.parametrize("groups", [3, 8])
def test_megvii_import_matches_pytorch(tmp_path, capsys, groups):
    model, src = _megvii_file(tmp_path, groups)
    dst = tmp_path / "converted.ckpt"
    assert convert_main([str(src), str(dst), "--check-size", str(SIZE)]) == 0
    assert "relative" in capsys.readouterr().out
    assert _compare(model, dst) < 1e-4
    _, description = load_network(dst)
    assert description.model == f"shufflenet_v1_g{groups}_x0_5"
    assert description.options == {"pool_padding": "symmetric", "classifier_bias": False}
    assert description.preprocessing == "megvii" and description.num_classes == CLASSES


def test_the_comparison_catches_a_missing_depthwise_permutation(tmp_path, monkeypatch):
    model, src = _megvii_file(tmp_path, 3)
    monkeypatch.setattr(convert, "_shuffled", lambda value, groups: value)
    convert_file(src, tmp_path / "wrong.ckpt")
    assert _compare(model, tmp_path / "wrong.ckpt") > 1e-2


class _Payload:
    """Pickles to a call that would create a file if the unpickler ran it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_megvii_files_are_read_without_running_pickled_code(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    src = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"module.first_conv.0.weight": torch.zeros(1)}, "x": _Payload(marker)}, src)
    assert convert_main([str(src), str(tmp_path / "out.ckpt")]) == 1
    assert "weights_only=True" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


def test_megvii_import_refuses_a_wrong_model_name(tmp_path, capsys):
    _, src = _megvii_file(tmp_path, 3)
    assert convert_main([str(src), str(tmp_path / "o.ckpt"), "--model", "shufflenet_v1_g8_x0_5"]) == 1
    assert "holds shufflenet_v1_g3_x0_5" in capsys.readouterr().err


def _zoo_checkpoint(tmp_path):
    """A checkpoint as the tutorial and model zoo write it: split convs, bias, optimizer state."""
    net = create_model("shufflenet_v1_g3_x0_5", num_classes=CLASSES, group_conv="split")
    fill_deterministic(net, 5)
    net.set_train(False)
    entries = [{"name": p.name, "data": p.data} for p in net.get_parameters()]
    entries += [{"name": f"moments.{p.name}", "data": p.data} for p in net.trainable_params()]
    path = tmp_path / "shufflenetv1-250_1251.ckpt"
    ms.save_checkpoint(entries, str(path), append_dict={"epoch_num": 250, "step_num": 312750})
    return net, path


def test_zoo_checkpoint_loads_directly_and_imports_with_identical_outputs(tmp_path):
    zoo_net, src = _zoo_checkpoint(tmp_path)
    inputs = ms.Tensor(probe_batch(2, SIZE, get_preprocessing("imagenet"), seed=4))
    expected = zoo_net(inputs).asnumpy()
    split = {"group_conv": "split"}  # the zoo's form; "native" sums in another order (~1e-6)
    net, description = load_network(src, options=split)  # no model name: recognised from shapes
    assert description.model == "shufflenet_v1_g3_x0_5"
    np.testing.assert_array_equal(net(inputs).asnumpy(), expected)

    dst = tmp_path / "imported.ckpt"
    assert convert_main([str(src), str(dst)]) == 0
    imported, description = load_network(dst, options=split)
    assert description.preprocessing == "imagenet"
    assert description.options["classifier_bias"] is True
    np.testing.assert_array_equal(imported(inputs).asnumpy(), expected)
    assert not any(key.startswith("moments.") for key in ms.load_checkpoint(str(dst)))
    native, _ = load_network(dst)
    np.testing.assert_allclose(native(inputs).asnumpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
