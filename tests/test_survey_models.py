"""The survey's networks (MobileNetV1 and V2, SqueezeNet, Xception): exact parameter counts,
complexity against the published, recognition from shapes, options and their effects."""
import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic, image_batch

import shufflenet
from shufflenet.engine.context import pynative_mode
from shufflenet.models import model_entry, recognise
from shufflenet.models.complexity import count_macs, count_params
from shufflenet.models.mobilenet_v2 import make_divisible
from shufflenet.models.squeezenet import CeilMaxPool

#: At 1000 classes, BatchNorm scales and shifts and the classifier bias included: the survey's
#: MobileNetV1 counts, torchvision's MobileNetV2 1.0 (3,504,872; every width counted from the
#: paper and matched to TF-slim's published counts below) and SqueezeNets, Cadene's Xception.
PARAMS = {
    "mobilenet_v1_025": 470_072, "mobilenet_v1_050": 1_331_592, "mobilenet_v1_075": 2_585_560,
    "mobilenet_v1_100": 4_231_976,
    "mobilenet_v2_035": 1_677_128, "mobilenet_v2_050": 1_968_680, "mobilenet_v2_075": 2_636_424,
    "mobilenet_v2_100": 3_504_872, "mobilenet_v2_130": 5_386_792, "mobilenet_v2_140": 6_108_776,
    "squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496,  # torchvision's
    "xception": 22_855_952,  # Cadene's and timm's
}
#: Published multiply-adds at the model's input: the MobileNetV1 paper's Table 6, TF-slim's
#: MobileNetV2 list, torchvision's SqueezeNet GFLOPS, timm's Xception GMACs (at 299 px).
PUBLISHED_MFLOPS = {
    "mobilenet_v1_025": 41, "mobilenet_v1_050": 149, "mobilenet_v1_075": 325, "mobilenet_v1_100": 569,
    "mobilenet_v2_035": 59, "mobilenet_v2_050": 97, "mobilenet_v2_075": 209, "mobilenet_v2_100": 300,
    "mobilenet_v2_130": 509, "mobilenet_v2_140": 582, "squeezenet1_0": 820, "squeezenet1_1": 350,
    "xception": 8400,
}

#: TF-slim's published MobileNetV2 parameters in M (its README's checkpoint table, 2 decimals):
#: convolution and classifier weights with the classifier bias, 1001 classes, no BatchNorm.
TF_SLIM_MOBILENET_V2_PARAMS = {"mobilenet_v2_035": 1.66, "mobilenet_v2_050": 1.95, "mobilenet_v2_075": 2.61,
                               "mobilenet_v2_100": 3.47, "mobilenet_v2_130": 5.34, "mobilenet_v2_140": 6.06}


def _shapes(net) -> dict:
    return {p.name: p.shape for p in net.get_parameters()}


def test_registry_lists_every_width():
    registered = [name for family in ("mobilenet_v1", "mobilenet_v2", "squeezenet", "xception")
                  for name in shufflenet.list_models(family)]
    assert set(registered) == set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_are_exact(name):
    assert count_params(shufflenet.create_model(name)) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_MFLOPS))
def test_multiply_adds_match_the_published_within_1_percent(name):
    with pynative_mode():
        mflops = count_macs(shufflenet.create_model(name), model_entry(name).image_size) / 1e6
    assert abs(mflops / PUBLISHED_MFLOPS[name] - 1) < 0.01, mflops


def mobilenet_v2_params(width: float, classes: int = 1000, batchnorm: bool = True) -> int:
    """MobileNetV2's parameters counted from the paper's Table 2 (t, c, n; strides add none) and
    the width rule of its reference code (`_make_divisible`, written out here), not from our
    model: every convolution bias-free, with a BatchNorm (scale and shift) if `batchnorm`; the
    classifier has a bias."""
    def divisible(value, divisor=8):
        rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
        return rounded + divisor if rounded < 0.9 * value else rounded

    table2 = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    bn = 2 if batchnorm else 0
    channels = divisible(32 * width)
    params = (27 + bn) * channels
    for t, c, n in table2:
        out = divisible(c * width)
        for _ in range(n):
            hidden = channels * t
            if t != 1:
                params += (channels + bn) * hidden
            params += (9 + bn) * hidden + (hidden + bn) * out
            channels = out
    last = divisible(1280 * max(1.0, width))
    return params + (channels + bn) * last + (last + 1) * classes


@pytest.mark.parametrize("name", sorted(TF_SLIM_MOBILENET_V2_PARAMS))
def test_mobilenet_v2_counts_are_the_papers_and_tf_slims(name):
    """`PARAMS` for every MobileNetV2 width, anchored outside our code: counted from the paper,
    torchvision's 1.0 (3,504,872) and, counted TF-slim's way, its published figures."""
    width = int(name[-3:]) / 100
    assert mobilenet_v2_params(1.0) == 3_504_872
    assert mobilenet_v2_params(width) == PARAMS[name]
    tf_slim = mobilenet_v2_params(width, classes=1001, batchnorm=False)
    assert round(tf_slim / 1e6, 2) == TF_SLIM_MOBILENET_V2_PARAMS[name], tf_slim


@pytest.mark.parametrize("value,expected", [(32 * 0.35, 16), (16 * 0.5, 8), (24 * 0.5, 16), (32 * 1.3, 40),
                                            (1280 * 1.4, 1792), (96 * 0.35, 32)])
def test_channels_round_to_multiples_of_8_never_10_percent_down(value, expected):
    assert make_divisible(value) == expected


def test_mobilenet_v2_blocks_add_their_input_where_shape_allows():
    net = shufflenet.create_model("mobilenet_v2_100")
    blocks = [cell for cell in net.features if hasattr(cell, "residual")]
    assert len(blocks) == 17
    assert [block.residual for block in blocks].count(True) == 10  # 17 blocks, 7 change shape


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_checkpoints_without_a_description_are_recognised(name):
    description = recognise(_shapes(shufflenet.create_model(name, num_classes=1001)))
    assert (description.model, description.num_classes) == (name, 1001)
    if name.startswith("squeezenet"):  # a .ckpt with these names is mindcv's: its network
        assert description.options == {"pool_rounding": "floor", "stem_padding": int(name == "squeezenet1_1")}


@pytest.mark.parametrize("size", [13, 26, 27, 54, 55, 109, 111])
def test_the_ceil_mode_pool_is_torchvisions_on_odd_and_even_sizes(size):
    """ceil((h - 3) / 2) + 1 outputs, each the max of its window, on non-negative inputs (every
    SqueezeNet pool follows a ReLU)."""
    torch = pytest.importorskip("torch")
    x = np.maximum(np.random.default_rng(size).standard_normal((2, 4, size, size + 1)), 0).astype(np.float32)
    expected = torch.nn.MaxPool2d(3, 2, ceil_mode=True)(torch.from_numpy(x)).numpy()
    actual = CeilMaxPool()(ms.Tensor(x)).asnumpy()
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("name,options,side", [
    ("squeezenet1_0", {}, 13), ("squeezenet1_0", {"pool_rounding": "floor"}, 12),
    ("squeezenet1_1", {}, 13), ("squeezenet1_1", {"pool_rounding": "floor", "stem_padding": 1}, 13),
])
def test_squeezenet_feature_maps_at_224_are_each_lineages(name, options, side):
    """torchvision's ceil pools give 13x13 final maps; mindcv's floor pools 12x12 (its padded 1.1
    stem brings 1.1 back to 13)."""
    net = shufflenet.create_model(name, num_classes=10, **options)
    net.set_train(False)
    assert net.forward_features(image_batch(1, 224)).shape == (1, 512, side, side)


def test_a_width_of_no_registered_model_is_named():
    shapes = _shapes(shufflenet.create_model("mobilenet_v1_100", num_classes=3))
    shapes["features.0.weight"] = (40, 3, 3, 3)  # timm's mobilenetv1_125 stem
    with pytest.raises(ValueError, match=r"w.ckpt: MobileNetV1 channels \(40, 64"):
        recognise(shapes, "w.ckpt")


def test_the_activation_is_an_option_with_a_visible_effect():
    relu = shufflenet.create_model("mobilenet_v1_025", num_classes=10)
    relu6 = shufflenet.create_model("mobilenet_v1_025", num_classes=10, activation="relu6")
    assert _shapes(relu) == _shapes(relu6)
    fill_deterministic(relu)
    ms.load_param_into_net(relu6, relu.parameters_dict())
    relu.set_train(False)
    relu6.set_train(False)
    x = image_batch(1, 64) * 20  # large inputs: activations above 6 where ReLU6 clips
    assert np.abs(relu(x).asnumpy() - relu6(x).asnumpy()).max() > 1e-3
    with pytest.raises(ValueError, match="activation must be one of"):
        shufflenet.create_model("mobilenet_v1_025", activation="swish")


@pytest.mark.parametrize("name,options,message", [
    ("squeezenet1_1", {"pool_rounding": "round"}, "pool_rounding must be one of"),
    ("squeezenet1_1", {"stem_padding": 2}, "stem_padding must be 0 or 1"),
    ("xception", {"pool_padding": "valid"}, "pool_padding must be one of"),
])
def test_bad_options_are_explained(name, options, message):
    with pytest.raises(ValueError, match=message):
        shufflenet.create_model(name, **options)


def test_xception_takes_299_px_inputs_scaled_to_plus_minus_one():
    entry = model_entry("xception")
    assert (entry.image_size, entry.preprocessing) == (299, "inception")
    from shufflenet.data.presets import eval_resize, get_preprocessing

    assert eval_resize(299, get_preprocessing("inception")) == 333  # Cadene's and timm's crop
