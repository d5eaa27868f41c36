"""Every registered model: shapes, gradients, golden outputs; and the ShuffleNetV1 family's
channels, options and initialisation."""
import gc
import json
import os
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic, image_batch
from mindspore import nn

import shufflenet
from shufflenet.engine.context import pynative_mode
from shufflenet.models import family_of, model_arch, model_options, stage_channels
from shufflenet.models.complexity import count_macs, count_params

ALL_MODELS = shufflenet.list_models()
V1_MODELS = shufflenet.list_models("shufflenet_v1")
GOLDEN = Path(__file__).parent / "golden"
#: One model of each family, for the tests of behaviour every family shares.
ONE_PER_FAMILY = sorted({family_of(name).name: name for name in reversed(ALL_MODELS)}.values())

# A per-model test costs graph compilations (3-9 s each on 2 cores; running a compiled graph
# takes milliseconds). So each model's inference graph is compiled once, for any input shape,
# and shared through the module-scoped fixture `inference`; `scope="module"` makes pytest run a
# model's tests back to back (one set-up each, also on one pytest-xdist worker in the usual case).
PER_MODEL = pytest.mark.parametrize("name", ALL_MODELS, scope="module")
#: Feature map side at 64 px where it is not 64 / 32 = 2: SqueezeNet's unpadded 7x7 (1.0) or 3x3
#: (1.1) stem and ceil-mode pools leave 3x3, as torchvision's (13x13 at 224 px).
FEATURE_MAP_AT_64 = {"squeezenet": (3, 3)}

# Megvii's trainable parameter counts (bias-free classifier, 1000 classes) and stage channels.
MEGVII = {
    "shufflenet_v1_g3_x0_5": (717_324, (12, 120, 240, 480)),
    "shufflenet_v1_g3_x1_0": (1_864_728, (24, 240, 480, 960)),
    "shufflenet_v1_g3_x1_5": (3_441_168, (24, 360, 720, 1440)),
    "shufflenet_v1_g3_x2_0": (5_449_776, (48, 480, 960, 1920)),
    "shufflenet_v1_g8_x0_5": (1_010_448, (16, 192, 384, 768)),
    "shufflenet_v1_g8_x1_0": (2_433_768, (24, 384, 768, 1536)),
    "shufflenet_v1_g8_x1_5": (4_268_952, (24, 576, 1152, 2304)),
    "shufflenet_v1_g8_x2_0": (6_521_232, (48, 768, 1536, 3072)),
}


def test_registry_lists_every_variant_of_the_paper_and_megvii():
    expected = {f"shufflenet_v1_g{g}_x{w}" for g in (1, 2, 4) for w in ("0_25", "0_5", "1_0")}
    expected |= {f"shufflenet_v1_g{g}_x{w}" for g in (3, 8)
                 for w in ("0_25", "0_5", "1_0", "1_5", "2_0")}
    assert set(V1_MODELS) == expected


def test_unknown_name_and_option_are_explained():
    with pytest.raises(ValueError, match="unknown model 'shufflenet_v1_g5_x1_0'.*shufflenet_v1_g3_x1_0"):
        shufflenet.create_model("shufflenet_v1_g5_x1_0")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['dropout'\].*pool_padding"):
        shufflenet.create_model("shufflenet_v1_g3_x1_0", dropout=0.2)
    assert set(model_options("shufflenet_v1_g3_x1_0")) == {
        "pool_padding", "classifier_bias", "group_conv", "in_channels"}


@pytest.mark.parametrize("options,message", [
    ({"pool_padding": "valid"}, "pool_padding must be one of"),
    ({"group_conv": "fast"}, "group_conv must be one of"),
    ({"num_classes": 0}, "num_classes must be a positive integer"),
    ({"classifier_bias": "yes"}, "classifier_bias must be True or False"),
    ({"in_channels": -1}, "in_channels must be a positive integer"),
])
def test_bad_option_values_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        shufflenet.create_model("shufflenet_v1_g3_x0_5", **options)


def test_register_refuses_duplicates():
    from shufflenet.models.registry import register_model
    with pytest.raises(ValueError, match="already registered"):
        register_model("shufflenet_v1_g3_x1_0", shufflenet.ShuffleNetV1, "shufflenet_v1", groups=3, width=1.0)


@pytest.mark.parametrize("name", sorted(MEGVII))
def test_megvii_channels_and_parameter_counts_are_exact(name):
    params, channels = MEGVII[name]
    arch = model_arch(name)
    assert stage_channels(arch["groups"], arch["width"]) == channels
    net = shufflenet.create_model(name, classifier_bias=False)
    assert count_params(net) == params
    # The tutorial's classifier bias adds exactly num_classes parameters.
    assert count_params(shufflenet.create_model(name)) == params + 1000


@pytest.mark.parametrize("name", V1_MODELS)
def test_every_grouped_convolution_is_valid(name):
    arch = model_arch(name)
    g = arch["groups"]
    stem, *stages = stage_channels(**arch)
    assert stem % g == 0 and stem >= 12
    assert all(c % (4 * g) == 0 for c in stages)
    assert stages[1] == 2 * stages[0] and stages[2] == 4 * stages[0]


@pytest.mark.parametrize("name,published", [
    ("shufflenet_v1_g3_x1_0", 140), ("shufflenet_v1_g3_x0_5", 38), ("shufflenet_v1_g3_x0_25", 13),
    ("shufflenet_v1_g3_x1_0", 138), ("shufflenet_v1_g3_x2_0", 524), ("shufflenet_v1_g8_x0_5", 40),
    ("shufflenet_v1_g8_x2_0", 522),
])
def test_multiply_adds_match_the_paper_and_megvii_within_3_percent(name, published):
    with pynative_mode():
        mflops = count_macs(shufflenet.create_model(name, classifier_bias=False)) / 1e6
    assert abs(mflops / published - 1) < 0.03, mflops


def test_count_macs_leaves_the_execution_mode_to_its_caller():
    """Forward hooks fire only in PyNative mode; count_macs refuses another rather than switch
    the process's mode behind its caller's back."""
    with pytest.raises(RuntimeError, match="pynative_mode"):
        count_macs(shufflenet.create_model("shufflenet_v1_g3_x0_25"), 32)
    assert ms.get_context("mode") == ms.GRAPH_MODE


def test_multiply_adds_are_counted_once_in_both_group_conv_forms():
    name = "shufflenet_v1_g3_x0_5"
    with pynative_mode():
        split = count_macs(shufflenet.create_model(name, group_conv="split"), 64)
        native = count_macs(shufflenet.create_model(name, group_conv="native"), 64)
    assert split == native > 0
    assert ms.get_context("mode") == ms.GRAPH_MODE  # restored after the PyNative pass


class FeaturesAndLogits(nn.Cell):
    """`(net.forward_features(x), net(x))` in one graph: the network's own `construct` runs as a
    sub-cell, so the logits are the ones `net(x)` gives.

    MindSpore parses `construct` from this file's text when it compiles: do not edit the file
    while a test run is going on (the compile would read the edited lines).
    """

    def __init__(self, net: nn.Cell) -> None:
        super().__init__()
        self.net = net

    def construct(self, x):
        return self.net.forward_features(x), self.net(x)


@pytest.fixture(scope="module")
def inference(name):
    """The model with 10 classes, deterministic weights (golden seed 1), in inference mode, and
    its features-and-logits graph compiled once for any batch and image size."""
    net = shufflenet.create_model(name, num_classes=10)
    fill_deterministic(net, seed=1)
    net.set_train(False)
    probe = FeaturesAndLogits(net)
    probe.set_inputs(ms.Tensor(shape=[None, 3, None, None], dtype=ms.float32))
    yield net, probe
    del net, probe
    gc.collect()
    ms.ms_memory_recycle()  # else every model's graphs keep ~85 MB of device memory cached


@PER_MODEL
def test_forward_shapes_and_gradients(name, inference):
    net, probe = inference
    for size in (32, 160, 224):
        _, logits = probe(image_batch(1, size))
        assert logits.shape == (1, 10)
    features, _ = probe(image_batch(1, 64))
    assert features.shape == (1, net.num_features, *FEATURE_MAP_AT_64.get(family_of(name).name, (2, 2)))
    net = shufflenet.create_model(name, num_classes=10)  # its own initialisation, trained mode
    net.set_train(True)
    x = image_batch(2, 32)
    proj = ms.Tensor(np.random.default_rng(3).standard_normal((2, 10)).astype(np.float32))

    def loss(inp):
        return (net(inp) * proj).sum()

    grads = ms.grad(loss, None, net.trainable_params())(x)
    for param, grad in zip(net.trainable_params(), grads):
        g = grad.asnumpy()
        assert np.isfinite(g).all(), param.name
        # Not the BatchNorm shifts: in training mode the shift of a BatchNorm followed by a 1x1
        # convolution and another BatchNorm (every ShuffleNet unit) has no gradient, as the next
        # BatchNorm subtracts the batch mean. Theirs is rounding noise (1e-9..1e-7 here, exactly 0
        # for ShuffleNetV2+ in CI); every other parameter gets >= 3e-4. A layer cut off from the
        # output still shows, through its convolution weights and BatchNorm scales.
        if not param.name.endswith(".beta"):
            assert np.abs(g).max() > 0, f"zero gradient for {param.name}"


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_reset_classifier_and_pre_logits(name):
    net = shufflenet.create_model(name, num_classes=1000)
    net.reset_classifier(7)
    net.set_train(False)
    assert net(image_batch(2, 32)).shape == (2, 7)
    pooled = net.forward_head(net.forward_features(image_batch(2, 32)), pre_logits=True)
    assert pooled.shape == (2, net.num_features)
    with pytest.raises(ValueError, match="num_classes"):
        net.reset_classifier(0)


def test_split_and_native_networks_share_checkpoints_and_outputs():
    split = shufflenet.create_model("shufflenet_v1_g8_x0_5", num_classes=10, group_conv="split")
    native = shufflenet.create_model("shufflenet_v1_g8_x0_5", num_classes=10, group_conv="native")
    fill_deterministic(split)
    not_loaded, ckpt_not_loaded = ms.load_param_into_net(native, split.parameters_dict())
    assert not_loaded == [] and ckpt_not_loaded == []
    split.set_train(False)
    native.set_train(False)
    x = image_batch(2, 64)
    np.testing.assert_allclose(split(x).asnumpy(), native(x).asnumpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,options", [
    ("shufflenet_v1_g3_x0_5", {"pool_padding": "same"}),
    ("shufflenet_v1_g3_x0_5", {"pool_padding": "symmetric"}),
    ("shufflenet_v2_x0_5", {}),
    ("shufflenet_v2_x0_5", {"unit_layout": "megvii", "pool_padding": "same"}),
    ("shufflenet_v2_plus_small", {}),
])
def test_graph_and_pynative_agree(name, options):
    net = shufflenet.create_model(name, num_classes=10, **options)
    fill_deterministic(net)
    net.set_train(False)
    x = image_batch(2, 64)
    graph = net(x).asnumpy()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        pynative = net(x).asnumpy()
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    np.testing.assert_allclose(graph, pynative, rtol=1e-4, atol=1e-4)


def test_pool_paddings_differ_on_even_inputs():
    same = shufflenet.create_model("shufflenet_v1_g3_x0_5", num_classes=10)
    symmetric = shufflenet.create_model("shufflenet_v1_g3_x0_5", num_classes=10,
                                        pool_padding="symmetric")
    fill_deterministic(same)
    ms.load_param_into_net(symmetric, same.parameters_dict())
    same.set_train(False)
    symmetric.set_train(False)
    x = image_batch(1, 64)
    assert np.abs(same(x).asnumpy() - symmetric(x).asnumpy()).max() > 1e-3


def test_megvii_initialisation():
    ms.set_seed(0)
    net = shufflenet.create_model("shufflenet_v1_g3_x1_0")
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert abs(params["first_conv.0.weight"].std() - 0.01) < 0.002
    dw = params["features.5.branch_main_2.0.weight"]  # 3x3 depthwise: fan-in channels 1
    assert dw.shape == (120, 1, 3, 3) and abs(dw.std() - 1.0) < 0.1
    pw = params["features.5.branch_main_1.0.convs.0.weight"]  # 480/3 input channels per group
    assert abs(pw.std() - 1 / 160) < 0.0005
    assert np.all(params["features.5.branch_main_1.1.beta"] == np.float32(1e-4))
    assert np.all(params["classifier.bias"] == 0)
    ms.set_seed(0)
    again = shufflenet.create_model("shufflenet_v1_g3_x1_0")
    for p in again.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), params[p.name])


@PER_MODEL
def test_golden_logits(name, inference):
    """A regression pin, not a reference: the stored logits were written by this code
    (`SHUFFLENET_UPDATE_GOLDEN=1`), so they catch any change of the computation but prove
    nothing about its correctness: the parity tests against the publishers' networks
    (test_convert*.py, test_mindcv*.py) and the published counts do that."""
    _, probe = inference
    logits = probe(image_batch(2, 64, seed=2))[1].asnumpy()
    golden = GOLDEN / f"{family_of(name).name}_logits.json"
    if os.environ.get("SHUFFLENET_UPDATE_GOLDEN"):
        stored = json.loads(golden.read_text()) if golden.exists() else {}
        stored[name] = logits.tolist()
        golden.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        pytest.skip("golden logits updated")
    expected = np.array(json.loads(golden.read_text())[name], dtype=np.float32)
    # Relative to the largest logit: kernels (oneDNN ISA, thread count) sum in other orders.
    assert np.abs(logits - expected).max() <= 1e-5 * np.abs(expected).max()
