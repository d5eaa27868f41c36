"""Channel shuffle and GroupConv: orderings, equivalence of the two implementations."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from shufflenet.models.layers import GroupConv, channel_shuffle, resolve_group_conv_impl


class _Shuffle(nn.Cell):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def construct(self, x):
        return channel_shuffle(x, self.groups)


def _numpy_shuffle(x, groups):
    b, c, h, w = x.shape
    return x.reshape(b, c // groups, groups, h, w).transpose(0, 2, 1, 3, 4).reshape(b, c, h, w)


@pytest.mark.parametrize("channels,groups", [(12, 3), (16, 8), (24, 2), (60, 3), (5, 1)])
def test_channel_shuffle_matches_numpy_reference(channels, groups):
    x = np.random.default_rng(0).standard_normal((2, channels, 3, 4)).astype(np.float32)
    out = _Shuffle(groups)(ms.Tensor(x)).asnumpy()
    np.testing.assert_array_equal(out, _numpy_shuffle(x, groups))


def test_channel_shuffle_ordering_is_the_lineages_not_the_papers():
    x = np.arange(12, dtype=np.float32).reshape(1, 12, 1, 1)
    out = _Shuffle(3)(ms.Tensor(x)).asnumpy().ravel().astype(int).tolist()
    assert out == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    # The paper's reshape (b, g, c/g) is the inverse permutation: applying it undoes ours.
    paper = x.reshape(1, 3, 4, 1, 1).transpose(0, 2, 1, 3, 4).reshape(12)
    assert paper.astype(int).tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert paper[np.array(out)].astype(int).tolist() == list(range(12))


def _pair(cin, cout, groups, stride=1):
    split = GroupConv(cin, cout, groups, stride=stride, impl="split")
    native = GroupConv(cin, cout, groups, stride=stride, impl="native")
    not_loaded, _ = ms.load_param_into_net(native, split.parameters_dict(), strict_load=True)
    assert not_loaded == []
    return split, native


@pytest.mark.parametrize("cin,cout,groups,stride", [(12, 24, 3, 1), (64, 32, 8, 1), (12, 6, 3, 2)])
def test_group_conv_split_equals_native_outputs_and_gradients(cin, cout, groups, stride):
    split, native = _pair(cin, cout, groups, stride)
    x = ms.Tensor(np.random.default_rng(1).standard_normal((2, cin, 7, 7)).astype(np.float32))
    np.testing.assert_allclose(split(x).asnumpy(), native(x).asnumpy(), rtol=1e-5, atol=1e-5)
    proj = ms.Tensor(np.random.default_rng(2).standard_normal(split(x).shape).astype(np.float32))

    def grads(cell):
        def loss(inp):
            return (cell(inp) * proj).sum()
        return ms.grad(loss, 0, cell.trainable_params())(x)

    (gx_s, gw_s), (gx_n, gw_n) = grads(split), grads(native)
    np.testing.assert_allclose(gx_s.asnumpy(), gx_n.asnumpy(), rtol=1e-4, atol=1e-5)
    assert len(gw_s) == len(gw_n) == groups
    for a, b in zip(gw_s, gw_n):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-4)


def test_group_conv_parameter_names_match_the_tutorial():
    conv = GroupConv(12, 24, 3, impl="native")
    assert [p.name for p in conv.trainable_params()] == [
        "convs.0.weight", "convs.1.weight", "convs.2.weight"
    ]
    assert conv.convs[0].weight.shape == (8, 4, 1, 1)


def test_group_conv_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupConv(10, 24, 3)


def test_group_conv_impl_resolution():
    assert resolve_group_conv_impl("auto") == "native"  # CPU
    assert resolve_group_conv_impl("split") == "split"
    with pytest.raises(ValueError, match="group_conv must be one of"):
        resolve_group_conv_impl("fast")
