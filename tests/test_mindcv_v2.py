"""mindcv's ShuffleNetV2 checkpoints against mindcv's own networks (`pip install --no-deps mindcv==0.3.0`).

mindcv's `shufflenet_v2_x*` files hold exactly our parameter names, so every command loads them
as they are, and `shufflenet convert` only drops their training state and records the
description. The networks below are mindcv 0.3.0's (`mindcv.models.shufflenetv2`), with
deterministic random weights and BatchNorm statistics.
"""
import numpy as np
import pytest
from test_mindcv import _relative, publish_mindcv

from shufflenet.cli.convert import main as convert_main
from shufflenet.inference import describe_checkpoint, load_network
from shufflenet.lineages import identify
from shufflenet.lineages import shufflenet_v2_mindcv as lineage
from shufflenet.utils.checkpoint import read_checkpoint

mindcv = pytest.importorskip("mindcv.models.shufflenetv2")

#: mindcv's model names, which are ours.
VARIANTS = ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")
SIZE = 64
CLASSES = 10
#: Largest |ours - mindcv| relative to the largest logit (measured: 0, bit-identical).
RELATIVE = 1e-5
MINDCV_OPTIONS = {"unit_layout": "megvii", "pool_padding": "same", "classifier_bias": False}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """name -> (mindcv network, its checkpoint, its logits on a probe batch)."""
    return publish_mindcv(mindcv, VARIANTS, tmp_path_factory.mktemp("mindcv_v2"))


@pytest.mark.parametrize("name", VARIANTS)
def test_every_mindcv_v2_file_loads_directly_and_matches_mindcv(published, name):
    inputs, files = published
    _, src, expected = files[name]
    params = read_checkpoint(src)
    assert identify(params) is lineage.LINEAGE and not lineage.LINEAGE.renames
    description = describe_checkpoint(params, source=str(src))  # recognised from the shapes
    assert (description.model, description.options) == (name, MINDCV_OPTIONS)
    net, loaded = load_network(src)
    assert loaded == description
    assert _relative(net(inputs).asnumpy(), expected) <= RELATIVE


@pytest.mark.parametrize("name", VARIANTS)
def test_every_mindcv_v2_file_converts_and_matches_mindcv(published, tmp_path, capsys, name):
    inputs, files = published
    _, src, expected = files[name]
    dst = tmp_path / "converted.ckpt"
    assert convert_main([str(src), str(dst)]) == 0  # no --source: recognised from the names
    assert "from mindcv weights" in capsys.readouterr().out
    net, description = load_network(dst)
    assert (description.model, description.options, description.preprocessing, description.num_classes) == \
        (name, MINDCV_OPTIONS, "imagenet", CLASSES)
    converted, source = read_checkpoint(dst), read_checkpoint(src)
    assert not any(key.split(".")[0] in ("adam_m", "adam_v", "ema", "global_step") for key in converted)
    for param in net.get_parameters():
        np.testing.assert_array_equal(converted[param.name].asnumpy(), source[param.name].asnumpy())
    assert _relative(net(inputs).asnumpy(), expected) <= RELATIVE
