"""Every registered model as a backbone (`features_only`): its maps are what `feature_info` says,
gradients reach every cell it builds, a full checkpoint loads into it strictly and its maps are
the full network's intermediate outputs. Run in PyNative (no graph compiled per model)."""
from __future__ import annotations

import hashlib
import math

import mindspore as ms
import numpy as np
import pytest
import yaml
from conftest import FAMILY_MODELS, fill_deterministic, image_batch

import shufflenet
from shufflenet.engine.context import pynative_mode
from shufflenet.models import (
    META_KEY,
    create_model,
    describe,
    family_of,
    feature_info,
    head_prefix,
    list_families,
    list_models,
)
from shufflenet.utils.checkpoint import load_weights, save_checkpoint

#: Input sides every model is checked at: a multiple of 32 and one that is not.
SIZES = (64, 72)
#: Full-network parameters a backbone with every tap point does not build: the head (its
#: declared prefix) and the cells that only widen for the classifier.
UNBUILT = {
    "shufflenet_v1": ("classifier.",),
    "shufflenet_v2": ("conv_last.", "classifier."),
    "shufflenet_v2_plus": ("conv_last.", "LastSE.", "fc.", "classifier."),
    "mobilenet_v1": ("classifier.",),
    "mobilenet_v2": ("features.20.", "features.21.", "classifier."),
    "squeezenet": ("classifier.",),
    "xception": ("fc.",),
}


@pytest.fixture(scope="module", autouse=True)
def pynative():
    """One eager run per model instead of one graph compiled per model and size."""
    with pynative_mode():
        yield


def maps(net, size: int, batch: int = 1) -> list[np.ndarray]:
    return [out.asnumpy() for out in net(image_batch(batch, size))]


def test_every_family_declares_tap_points_at_the_usual_reductions():
    for family in list_families():
        name = list_models(family)[0]
        reductions = [tap["reduction"] for tap in feature_info(name)]
        expected = [2, 4, 8, 16] if family == "squeezenet" else [2, 4, 8, 16, 32]  # three pools only
        assert reductions == expected, family
        assert family_of(name).features is not None


@pytest.mark.parametrize("name", list_models())
def test_maps_have_the_channels_and_reductions_of_feature_info(name):
    net = create_model(name, features_only=True)
    net.set_train(False)
    info = feature_info(name)
    assert [tap.to_dict() for tap in net.feature_info] == info
    for size in SIZES:
        outs = maps(net, size)
        assert [out.shape[1] for out in outs] == [tap["num_chs"] for tap in info], size
        # Unpadded convolutions (Xception, SqueezeNet) lose a few pixels: the nearest power of two.
        found = [2 ** round(math.log2(size / out.shape[-1])) for out in outs]
        assert found == [tap["reduction"] for tap in info], size


def test_out_indices_select_and_stop_at_the_deepest():
    name = FAMILY_MODELS["shufflenet_v2"]
    net = create_model(name, features_only=True, out_indices=(1, 2))
    assert net.channels == tuple(tap["num_chs"] for tap in feature_info(name)[1:3])
    assert net.reductions == (4, 8)
    assert not any(p.name.startswith("features.4.") for p in net.get_parameters())
    assert [out.shape[1] for out in maps(net, 64)] == list(net.channels)
    assert create_model(name, features_only=True, out_indices=(-1,)).reductions == (32,)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"out_indices": (2, 1)}, "out_indices"),
    ({"out_indices": (5,)}, "out_indices"),
    ({"out_indices": ()}, "out_indices"),
    ({"out_indices": "12"}, "out_indices"),
    ({"out_indices": (1, 1)}, "out_indices"),
    ({"num_classes": 10}, "num_classes"),
    ({"classifier_bias": False}, "classifier_bias"),
    ({"dropout": 0.1}, "dropout"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_backbone_requests_name_the_argument(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        create_model(FAMILY_MODELS["shufflenet_v2"], features_only=True, **kwargs)


def test_out_indices_without_features_only_is_refused():
    with pytest.raises(ValueError, match="features_only"):
        create_model(FAMILY_MODELS["shufflenet_v2"], out_indices=(1,))


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_gradients_reach_every_built_parameter(family):
    net = create_model(FAMILY_MODELS[family], features_only=True)
    fill_deterministic(net)
    net.set_train(True)
    weights = net.trainable_params()

    def loss(x):
        return sum((out * out).mean() for out in net(x))

    grads = ms.grad(loss, grad_position=None, weights=weights)(image_batch(2, 32))
    dead = [p.name for p, g in zip(weights, grads) if not np.abs(g.asnumpy()).sum() > 0]
    assert not dead


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_a_full_checkpoint_loads_and_gives_the_full_networks_maps(family):
    name = FAMILY_MODELS[family]
    full = create_model(name, num_classes=7)
    fill_deterministic(full)
    full.set_train(False)
    backbone = create_model(name, features_only=True)
    built = {p.name for p in backbone.get_parameters()}
    full_params = {p.name: p for p in full.get_parameters()}
    assert load_weights(backbone, full_params) == []  # every built parameter, by its own name
    unbuilt = set(full_params) - built
    assert head_prefix(name) in UNBUILT[family]
    assert unbuilt == {key for key in full_params if key.startswith(UNBUILT[family])}
    backbone.set_train(False)
    assert_maps_equal_full_network(backbone, full)


def assert_maps_equal_full_network(backbone, full) -> None:
    """The backbone's maps against forward hooks on the full network's tap cells."""
    caught, handles = {}, []
    cells = dict(full.cells_and_names())

    def catch(module: str):
        def hook(cell, inputs, output) -> None:  # returning None keeps the output
            caught[module] = output.asnumpy()
        return hook

    for tap in backbone.feature_info:
        handles.append(cells[tap.module].register_forward_hook(catch(tap.module)))
    x = image_batch(1, 72, seed=3)
    full(x)
    for handle in handles:
        handle.remove()
    for tap, out in zip(backbone.feature_info, backbone(x)):
        np.testing.assert_allclose(out.asnumpy(), caught[tap.module], rtol=1e-5, atol=1e-5,
                                   err_msg=tap.module)


def test_published_weights_load_into_the_backbone(publisher_server, tmp_path, monkeypatch):
    """`shufflenet.create_model(..., pretrained=TAG, features_only=True)` from a weight table."""
    for variable in ("SHUFFLENET_WEIGHTS_FILE", "SHUFFLENET_OFFLINE", "SHUFFLENET_WEIGHTS_MIRROR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SHUFFLENET_HOME", str(tmp_path / "home"))
    name = FAMILY_MODELS["shufflenet_v1"]
    full = create_model(name, num_classes=10, classifier_bias=False)
    fill_deterministic(full)
    description = describe(name, 10, image_size=32, options={"classifier_bias": False})
    data = save_checkpoint(full, tmp_path / "own.ckpt", extra={META_KEY: description.to_json()}).read_bytes()
    publisher_server.files["/team/own.ckpt"] = data
    table = tmp_path / "weights.yaml"
    table.write_text(yaml.safe_dump([{"model": name, "tag": "team", "publisher": "shufflenet",
                                      "url": publisher_server.url + "/team/own.ckpt", "check": "sha256",
                                      "sha256": hashlib.sha256(data).hexdigest()}]))
    backbone = shufflenet.create_model(name, pretrained="team", table_file=table, features_only=True,
                                       out_indices=(2, 4))
    assert backbone.reductions == (8, 32)
    values = {p.name: p.asnumpy() for p in full.get_parameters()}
    assert all(np.array_equal(p.asnumpy(), values[p.name]) for p in backbone.get_parameters())
    with pytest.raises(ValueError, match="num_classes"):
        shufflenet.create_model(name, pretrained="team", table_file=table, features_only=True, num_classes=3)


def test_the_readme_table_of_tap_points_is_feature_info():
    from pathlib import Path

    from shufflenet.models.registry import feature_table_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n### Backbones\n", 1)[1].split("\n#", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == feature_table_markdown()


@pytest.mark.parametrize("ours, timms", [("mobilenet_v1_100", "mobilenetv1_100"),
                                         ("mobilenet_v2_100", "mobilenetv2_100"),
                                         ("xception", "legacy_xception")])
def test_default_tap_points_follow_timms_own_feature_info(ours, timms):
    """Where timm has the network, the default maps are timm's: the same channels at the same
    reductions, read from timm's own code (`features_only=True`, untrained)."""
    from publisher_code import import_publishers

    _, timm = import_publishers()
    theirs = timm.create_model(timms, features_only=True, pretrained=False).feature_info
    assert [tap["num_chs"] for tap in feature_info(ours)] == theirs.channels()
    assert [tap["reduction"] for tap in feature_info(ours)] == theirs.reduction()
