"""BatchNorm recalibration: exact averages of the batch statistics, and nothing else changed."""
import functools

import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic
from mindspore import nn

import shufflenet
import shufflenet.models
from shufflenet.engine.recalibrate import batchnorm_layers, recalibrate_batchnorm
from shufflenet.utils.checkpoint import load_weights

EPS = 1e-5  # nn.BatchNorm2d's default


class Tiny(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, pad_mode="pad", padding=1, has_bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, pad_mode="pad", padding=1, has_bias=False)
        self.bn2 = nn.BatchNorm2d(5)

    def construct(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


def batches(count, shape=(4, 3, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.5, 2.0, shape).astype(np.float32) for _ in range(count)]


def batch_stats(h):
    """Per-channel mean and unbiased variance of an NCHW activation, in float64."""
    h = h.astype(np.float64)
    return h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3), ddof=1)


def expected_average(per_batch):
    return np.mean([m for m, _ in per_batch], axis=0), np.mean([v for _, v in per_batch], axis=0)


def copy_of(net, build):
    other = build()
    load_weights(other, {p.name: p for p in net.get_parameters()})
    return other


def snapshot(params):
    return {p.name: p.asnumpy().copy() for p in params}


def assert_stats(bn, mean, var):
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.asnumpy(), var, rtol=1e-5, atol=1e-6)


def test_tiny_net_gets_the_average_of_each_layers_batch_statistics():
    net = Tiny()
    fill_deterministic(net)  # random gamma/beta and stale statistics, which must not leak in
    weights = snapshot(net.trainable_params())
    data = batches(3)
    net.set_train(False)
    assert recalibrate_batchnorm(net, [ms.Tensor(x) for x in data], 8) == 3

    first, second = [], []
    for x in data:
        h1 = net.conv1(ms.Tensor(x)).asnumpy()  # the network's own conv, called as a sub-cell
        first.append(batch_stats(h1))
        mean, biased = h1.mean(axis=(0, 2, 3)), h1.var(axis=(0, 2, 3))  # train mode normalises with these
        gamma, beta = net.bn1.gamma.asnumpy(), net.bn1.beta.asnumpy()
        y = (h1 - mean[:, None, None]) / np.sqrt(biased[:, None, None] + EPS)
        y = np.maximum(gamma[:, None, None] * y + beta[:, None, None], 0).astype(np.float32)
        second.append(batch_stats(net.conv2(ms.Tensor(y)).asnumpy()))
    assert_stats(net.bn1, *expected_average(first))
    assert_stats(net.bn2, *expected_average(second))
    assert snapshot(net.trainable_params()).keys() == weights.keys()
    for name, value in snapshot(net.trainable_params()).items():
        np.testing.assert_array_equal(value, weights[name])
    assert not net.training and not net.bn1.training

    mean = net.bn1.moving_mean.asnumpy().copy()  # compiled now: the original momentum must be back
    net.set_train(True)
    net(ms.Tensor(data[0]))
    expected = 0.9 * mean + 0.1 * first[0][0]
    np.testing.assert_allclose(net.bn1.moving_mean.asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_registered_model_changes_only_its_statistics():
    name = "shufflenet_v1_g3_x0_25"
    build = functools.partial(shufflenet.create_model, name, num_classes=10)
    net = build()
    fill_deterministic(net)
    names = [p.name for p in net.get_parameters()]
    weights = snapshot(net.trainable_params())
    before = copy_of(net, build)
    probe = ms.Tensor(batches(1, seed=9)[0])
    data = batches(3)
    net.set_train(True)  # compile the network's own train graph first: it must keep its momentum
    net(ms.Tensor(data[0]))
    net.set_train(False)
    old_logits = net(probe).asnumpy()

    labelled = [(ms.Tensor(x), ms.Tensor(np.zeros(4, np.int32))) for x in data]
    assert recalibrate_batchnorm(net, labelled, 3) == 3
    conv = net.first_conv[0]
    per_batch = [batch_stats(conv(ms.Tensor(x)).asnumpy()) for x in data]
    assert_stats(net.first_conv[1], *expected_average(per_batch))
    assert [p.name for p in net.get_parameters()] == names
    for key, value in snapshot(net.trainable_params()).items():
        np.testing.assert_array_equal(value, weights[key])

    # eval outputs change through the statistics alone: a copy given only the new statistics agrees
    new_stats = {p.name: p for p in net.get_parameters() if "moving_" in p.name}
    for param in before.get_parameters():
        if param.name in new_stats:
            param.set_data(ms.Tensor(new_stats[param.name].asnumpy()))
    before.set_train(False)
    logits = net(probe).asnumpy()
    np.testing.assert_array_equal(logits, before(probe).asnumpy())
    assert not np.allclose(logits, old_logits)

    # the original momentum (nn 0.9: 10 % of the batch) is back in the network's own graph
    bn, mean = net.first_conv[1], net.first_conv[1].moving_mean.asnumpy().copy()
    net.set_train(True)
    net(ms.Tensor(data[1]))
    batch_mean, _ = batch_stats(conv(ms.Tensor(data[1])).asnumpy())
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), 0.9 * mean + 0.1 * batch_mean, rtol=1e-5, atol=1e-6)


#: A model of every family with BatchNorm (SqueezeNet has none: recalibrating it is refused, below).
WITH_BATCHNORM = [("shufflenet_v1_g3_x0_25", 32), ("mobilenet_v1_025", 32), ("mobilenet_v2_035", 32),
                  ("shufflenet_v2_x0_5", 32), ("shufflenet_v2_plus_small", 32), ("xception", 71)]


def test_the_cases_cover_every_family_with_batchnorm():
    families = {shufflenet.models.family_of(name).name for name, _ in WITH_BATCHNORM}
    assert sorted(families | {"squeezenet"}) == sorted(shufflenet.models.list_families())
    with pytest.raises(ValueError, match="has no BatchNorm layers"):
        batchnorm_layers(shufflenet.create_model("squeezenet1_1", num_classes=10))


@pytest.mark.parametrize("name,size", WITH_BATCHNORM)
def test_every_batchnorm_of_each_family_is_recalibrated(name, size):
    """One batch: each BatchNorm's statistics equal what one ordinary train step with reset
    statistics derives from its momentum, so no layer (nested or not) is missed."""
    build = functools.partial(shufflenet.create_model, name, num_classes=10)
    net = build()
    reference = copy_of(net, build)
    x = ms.Tensor(batches(1, (2, 3, size, size))[0])
    assert recalibrate_batchnorm(net, iter([x]), 4) == 1
    layers = batchnorm_layers(reference)
    for _, bn in layers:
        bn.moving_mean.set_data(ms.Tensor(np.zeros(bn.num_features, np.float32)))
        bn.moving_variance.set_data(ms.Tensor(np.ones(bn.num_features, np.float32)))
    reference.set_train(True)
    reference(x)
    for (layer, got), (_, ref) in zip(batchnorm_layers(net), layers):
        m = ref.momentum  # the op's momentum: the batch's share
        mean, var = ref.moving_mean.asnumpy() / m, (ref.moving_variance.asnumpy() - (1 - m)) / m
        atol = 2.0**-21 * max(1.0, np.abs(var).max()) / m  # float32 rounding of 1 - m + m var, over m
        np.testing.assert_allclose(got.moving_mean.asnumpy(), mean, rtol=1e-4, atol=atol, err_msg=layer)
        np.testing.assert_allclose(got.moving_variance.asnumpy(), var, rtol=1e-4, atol=atol, err_msg=layer)


def test_takes_at_most_max_batches_from_the_iterator():
    net = Tiny()
    pulled = []

    def stream(count):
        for x in batches(count):
            pulled.append(1)
            yield x, np.zeros(4, np.int32)  # numpy arrays and (images, labels) tuples are accepted

    assert recalibrate_batchnorm(net, stream(5), 2) == 2 and len(pulled) == 2
    pulled.clear()
    assert recalibrate_batchnorm(net, stream(3), 10) == 3 and len(pulled) == 3


def test_refusals_leave_the_network_as_it_was():
    net = Tiny()
    fill_deterministic(net)
    stats = snapshot(net.get_parameters())
    with pytest.raises(ValueError, match="max_batches must be a positive integer"):
        recalibrate_batchnorm(net, batches(1), 0)
    with pytest.raises(ValueError, match="the batches yielded nothing"):
        recalibrate_batchnorm(net, iter([]), 3)
    with pytest.raises(TypeError, match="expected a batch of images"):
        recalibrate_batchnorm(net, ["not an image"], 3)
    for name, value in snapshot(net.get_parameters()).items():
        np.testing.assert_array_equal(value, stats[name])
    assert net.bn1.bn_train.momentum == pytest.approx(0.1)
    with pytest.raises(ValueError, match="has no BatchNorm layers"):
        recalibrate_batchnorm(nn.SequentialCell(nn.Conv2d(3, 4, 3), nn.ReLU()), batches(1), 1)
