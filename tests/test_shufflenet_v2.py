"""ShuffleNetV2 and ShuffleNetV2+: channels, parameter counts, complexity, both unit layouts."""
import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic, image_batch

import shufflenet
from shufflenet.models import recognise
from shufflenet.models.shufflenet_v2 import interleave_halves, split_even_odd
from shufflenet.utils.complexity import count_macs, count_params

V2 = ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")
PLUS = ("shufflenet_v2_plus_small", "shufflenet_v2_plus_medium", "shufflenet_v2_plus_large")
#: torchvision's counts (its layout, classifier with bias) and Megvii's (its layout, no bias).
TORCHVISION_PARAMS = dict(zip(V2, (1_366_792, 2_278_604, 3_503_624, 7_393_996)))
MEGVII_PARAMS = dict(zip(V2, (1_365_792, 2_278_760, 3_506_720, 7_402_600)))


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
    mflops = count_macs(shufflenet.create_model(name, **options)) / 1e6
    assert abs(mflops / published - 1) < 0.02, mflops


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
