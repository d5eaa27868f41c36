"""ShuffleNetV2 and ShuffleNetV2+: channels, parameter counts, complexity, both unit layouts."""
import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic, image_batch

import shufflenet
from shufflenet.engine.context import pynative_mode
from shufflenet.models import recognise
from shufflenet.models.complexity import count_macs, count_params
from shufflenet.models.shufflenet_v2 import interleave_halves, split_even_odd

V2 = ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")
PLUS = ("shufflenet_v2_plus_small", "shufflenet_v2_plus_medium", "shufflenet_v2_plus_large")
#: torchvision's counts (its layout, classifier with bias) and Megvii's (its layout, no bias).
TORCHVISION_PARAMS = dict(zip(V2, (1_366_792, 2_278_604, 3_503_624, 7_393_996)))
MEGVII_PARAMS = dict(zip(V2, (1_365_792, 2_278_760, 3_506_720, 7_402_600)))
#: Megvii's searched ShuffleNetV2+ (their network.py and train.py), one entry per unit: 0, 1, 2 a
#: ShuffleNetV2 unit with a 3x3, 5x5, 7x7 depthwise convolution, 3 an Xception unit.
MEGVII_ARCHITECTURE = [0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2]
#: Megvii's `stage_out_channels` (stem, stages 2-5; the last convolution is 1280 wide).
MEGVII_PLUS_CHANNELS = {"small": (16, 36, 104, 208, 416), "medium": (16, 48, 128, 256, 512),
                        "large": (16, 68, 168, 336, 672)}
#: Megvii's README: parameters in M, cut (not rounded) to 0.1 M, and FLOPs (multiply-adds) in M.
MEGVII_PLUS_PUBLISHED = {"small": (5.1, 156), "medium": (5.6, 222), "large": (6.7, 360)}
#: What the counter below gives (Megvii's figures exactly, not cut), also the README's.
MEGVII_PLUS_PARAMS = {"small": 5_137_116, "medium": 5_679_840, "large": 6_768_220}


def _shapes(net) -> dict:
    return {p.name: p.shape for p in net.get_parameters()}


def test_registry_lists_both_families():
    assert set(shufflenet.list_models("shufflenet_v2")) == set(V2)
    assert set(shufflenet.list_models("shufflenet_v2_plus")) == set(PLUS)


@pytest.mark.parametrize("name", V2)
def test_parameter_counts_are_torchvisions_and_megviis(name):
    assert count_params(shufflenet.create_model(name)) == TORCHVISION_PARAMS[name]
    megvii = shufflenet.create_model(name, unit_layout="megvii", classifier_bias=False)
    assert count_params(megvii) == MEGVII_PARAMS[name]


@pytest.mark.parametrize("name,published", [
    ("shufflenet_v2_x0_5", 41), ("shufflenet_v2_x1_0", 146), ("shufflenet_v2_x1_5", 299),
    ("shufflenet_v2_x2_0", 591), ("shufflenet_v2_plus_small", 156),
    ("shufflenet_v2_plus_medium", 222), ("shufflenet_v2_plus_large", 360),
])
def test_multiply_adds_match_megvii_within_2_percent(name, published):
    options = {"unit_layout": "megvii"} if name in V2 else {}
    with pynative_mode():
        mflops = count_macs(shufflenet.create_model(name, **options)) / 1e6
    assert abs(mflops / published - 1) < 0.02, mflops


def megvii_plus_complexity(size: str, classes: int = 1000) -> tuple[int, int]:
    """Trainable parameters and multiply-adds at 224 px of Megvii's ShuffleNetV2+, counted from
    their blocks.py and network.py, not from our model: every convolution bias-free with a
    BatchNorm (2 parameters a channel), a stride-1 unit on half its input, SE (C -> C/4 -> C) in
    stages 4-5, Xception units and their projection 3x3; a bias-free 1280 x 1280 fc and classifier."""
    def conv(c_in, c_out, k=1, depthwise=False, positions=1):
        weights = (1 if depthwise else c_in) * c_out * k * k
        return weights + 2 * c_out, weights * positions

    def se(c):
        return 2 * c * (c // 4) + 2 * (c // 4), 2 * c * (c // 4)

    stem, *stages = MEGVII_PLUS_CHANNELS[size]
    side, units = 112, iter(MEGVII_ARCHITECTURE)
    layers = [conv(3, stem, 3, positions=side * side)]
    c_in = stem
    for stage, (repeats, c_out) in enumerate(zip((4, 4, 8, 4), stages)):
        side //= 2
        hw = side * side
        for i in range(repeats):
            inp = c_in if i == 0 else c_in // 2
            mid, out = c_out // 2, c_out - inp
            choice = next(units)
            k = 3 if choice == 3 else 3 + 2 * choice
            if choice == 3:  # (3x3 depthwise, 1x1) three times
                layers += [conv(inp, inp, 3, True, hw), conv(inp, mid, positions=hw),
                           conv(mid, mid, 3, True, hw), conv(mid, mid, positions=hw),
                           conv(mid, mid, 3, True, hw), conv(mid, out, positions=hw)]
            else:  # 1x1 (before the stride), kxk depthwise, 1x1
                layers += [conv(inp, mid, positions=hw * (4 if i == 0 else 1)),
                           conv(mid, mid, k, True, hw), conv(mid, out, positions=hw)]
            if stage >= 2:
                layers.append(se(out))
            if i == 0:  # the projection branch: kxk depthwise, 1x1
                layers += [conv(inp, inp, k, True, hw), conv(inp, inp, positions=hw)]
            c_in = c_out
    layers += [conv(c_in, 1280, positions=side * side), se(1280), (1280 * 1280,) * 2, (1280 * classes,) * 2]
    return sum(p for p, _ in layers), sum(m for _, m in layers)


@pytest.mark.parametrize("size", sorted(MEGVII_PLUS_PUBLISHED))
def test_the_plus_counter_gives_megviis_published_figures(size):
    """The counter's exact figures, cut to Megvii's 0.1 M and rounded to their MFLOPs. Alone
    this cannot see a 3x3 <-> 7x7 swap (40 x mid parameters, < 0.1 M): the exact counts can."""
    params, macs = megvii_plus_complexity(size)
    published_params, published_mflops = MEGVII_PLUS_PUBLISHED[size]
    assert params == MEGVII_PLUS_PARAMS[size]
    assert params // 100_000 == round(published_params * 10) and round(macs / 1e6) == published_mflops


def _depthwise_kernels(net, unit: int, branch: str) -> list[int]:
    """Kernel sides of the depthwise convolutions of one unit's branch, in order."""
    prefix = f"features.{unit}.{branch}."
    return [p.shape[-1] for p in net.get_parameters()
            if p.name.startswith(prefix) and len(p.shape) == 4 and p.shape[1] == 1 and p.shape[-1] > 1]


@pytest.mark.parametrize("size", sorted(MEGVII_PLUS_PUBLISHED))
def test_plus_is_megviis_architecture_unit_by_unit(size):
    """Every unit's kind and depthwise kernels as Megvii's list says (a swap of two units keeps
    the counts), and the parameters exactly as counted from Megvii's code: independent of
    `shufflenet_v2_plus.ARCHITECTURE`, which our model and its PyTorch rebuild share."""
    net = shufflenet.create_model(f"shufflenet_v2_plus_{size}")
    params = count_params(net)
    assert params == MEGVII_PLUS_PARAMS[size]
    first_units = {0, 4, 8, 16}
    for unit, choice in enumerate(MEGVII_ARCHITECTURE):
        kernels = [3, 3, 3] if choice == 3 else [3 + 2 * choice]
        assert _depthwise_kernels(net, unit, "branch_main") == kernels, unit
        projection = kernels[-1:] if unit in first_units else []
        assert _depthwise_kernels(net, unit, "branch_proj") == projection, unit


def test_the_layouts_shuffle_as_their_lineages():
    x = np.arange(2 * 8 * 2 * 2, dtype=np.float32).reshape(2, 8, 2, 2)
    even, odd = split_even_odd(ms.Tensor(x))
    np.testing.assert_array_equal(even.asnumpy(), x[:, 0::2])  # Megvii: reshape (b*c/2, 2, hw)
    np.testing.assert_array_equal(odd.asnumpy(), x[:, 1::2])
    # torchvision's channel_shuffle(x, 2): reshape (b, 2, c/2), transpose: halves interleaved.
    np.testing.assert_array_equal(interleave_halves(ms.Tensor(x)).asnumpy(),
                                  x[:, [0, 4, 1, 5, 2, 6, 3, 7]])


def test_layouts_share_shapes_at_half_width_and_not_above():
    def shapes(name, layout):
        return _shapes(shufflenet.create_model(name, unit_layout=layout))

    assert shapes("shufflenet_v2_x0_5", "megvii") == shapes("shufflenet_v2_x0_5", "torchvision")
    assert shapes("shufflenet_v2_x1_0", "megvii") != shapes("shufflenet_v2_x1_0", "torchvision")


def test_layouts_differ_in_outputs_with_the_same_weights():
    torchvision = shufflenet.create_model("shufflenet_v2_x0_5", num_classes=10)
    megvii = shufflenet.create_model("shufflenet_v2_x0_5", num_classes=10, unit_layout="megvii")
    fill_deterministic(torchvision)
    ms.load_param_into_net(megvii, torchvision.parameters_dict())
    x = image_batch(1, 64)
    torchvision.set_train(False)
    megvii.set_train(False)
    assert np.abs(torchvision(x).asnumpy() - megvii(x).asnumpy()).max() > 1e-3


LAYOUT_CASES = [("shufflenet_v2_x1_0", "megvii"), ("shufflenet_v2_x1_0", "torchvision"),
                ("shufflenet_v2_x0_5", "megvii")]


@pytest.mark.parametrize("name,layout", LAYOUT_CASES)
def test_checkpoints_without_a_description_are_recognised(name, layout):
    net = shufflenet.create_model(name, num_classes=7, unit_layout=layout, classifier_bias=False)
    description = recognise(_shapes(net))
    assert (description.model, description.num_classes) == (name, 7)
    assert description.options["unit_layout"] == layout
    assert description.options["classifier_bias"] is False
    if layout == "megvii":  # mindcv's and the zoo's files: their 'same' max pool
        assert description.options["pool_padding"] == "same"


@pytest.mark.parametrize("name", PLUS)
def test_plus_checkpoints_are_recognised(name):
    assert recognise(_shapes(shufflenet.create_model(name, num_classes=5))).model == name


@pytest.mark.parametrize("options,message", [
    ({"unit_layout": "tf"}, "unit_layout must be one of"),
    ({"pool_padding": "valid"}, "pool_padding must be one of"),
    ({"classifier_bias": 1}, "classifier_bias must be True or False"),
])
def test_bad_options_are_explained(options, message):
    with pytest.raises(ValueError, match=message):
        shufflenet.create_model("shufflenet_v2_x0_5", **options)


@pytest.mark.parametrize("name,options", [
    ("shufflenet_v2_x1_0", {"unit_layout": "megvii", "pool_padding": "same", "classifier_bias": False}),
    ("shufflenet_v2_plus_small", {}),
])
def test_a_checkpoint_reopens_as_the_network_it_describes(tmp_path, name, options):
    from shufflenet.data.presets import get_preprocessing
    from shufflenet.export import probe_batch
    from shufflenet.inference import open_checkpoint
    from shufflenet.models import META_KEY, describe
    from shufflenet.utils.checkpoint import save_checkpoint

    net = shufflenet.create_model(name, num_classes=4, **options)
    fill_deterministic(net)
    net.set_train(False)
    description = describe(name, 4, image_size=64, options=options)
    path = save_checkpoint(net, tmp_path / "net.ckpt", extra={META_KEY: description.to_json()})
    predictor = open_checkpoint(path)
    assert predictor.description == description
    inputs = probe_batch(3, 64, get_preprocessing("imagenet"))
    np.testing.assert_array_equal(predictor(inputs), net(ms.Tensor(inputs)).asnumpy())
