"""mindcv's ShuffleNetV2, MobileNetV1, MobileNetV2, SqueezeNet and Xception checkpoints against
mindcv's own networks (`pip install --no-deps mindcv==0.3.0`).

Every command loads these files as they are (the registry recognises the model from the shapes;
Xception's `blocks.{i}` and `classifier` are renamed in memory), and `shufflenet convert` drops
their training state and records the description.
The networks are mindcv 0.3.0's, with deterministic random weights and BatchNorm statistics, run
in PyNative mode on both sides (no graph compile per network: the per-model tests cover graph
mode).
"""
import importlib

import numpy as np
import pytest
from conftest import publish_mindcv, relative_difference

from shufflenet.cli.convert import main as convert_main
from shufflenet.engine.context import pynative_mode
from shufflenet.inference import load_network
from shufflenet.lineages import (
    identify,
    mobilenet_v1_mindcv,
    mobilenet_v2_mindcv,
    shufflenet_v2_mindcv,
    squeezenet_mindcv,
    xception_mindcv,
)
from shufflenet.models import describe_checkpoint
from shufflenet.utils.checkpoint import read_checkpoint

pytest.importorskip("mindcv.models")

CLASSES = 10
#: Largest |ours - mindcv| relative to the largest logit (measured: 0, bit-identical).
RELATIVE = 1e-5
#: family (or model) -> (mindcv's module, its model names -> ours, our options that reproduce
#: them, lineage).
V2_WIDTHS = ("0_5", "1_0", "1_5", "2_0")
V1_WIDTHS = ("025", "050", "075", "100")
MOBILENET_V2 = {"mobilenet_v2_035_224": "mobilenet_v2_035", "mobilenet_v2_050_224": "mobilenet_v2_050",
                "mobilenet_v2_075": "mobilenet_v2_075", "mobilenet_v2_100": "mobilenet_v2_100",
                "mobilenet_v2_130_224": "mobilenet_v2_130", "mobilenet_v2_140": "mobilenet_v2_140"}
FAMILIES = {
    "shufflenet_v2": ("shufflenetv2", {f"shufflenet_v2_x{w}": f"shufflenet_v2_x{w}" for w in V2_WIDTHS},
                      {"unit_layout": "megvii", "pool_padding": "same", "classifier_bias": False},
                      shufflenet_v2_mindcv.LINEAGE),
    "mobilenet_v1": ("mobilenetv1", {f"mobilenet_v1_{w}": f"mobilenet_v1_{w}" for w in V1_WIDTHS},
                     {"activation": "relu"}, mobilenet_v1_mindcv.LINEAGE),
    "mobilenet_v2": ("mobilenetv2", MOBILENET_V2, {}, mobilenet_v2_mindcv.LINEAGE),
    "squeezenet1_0": ("squeezenet", {"squeezenet1_0": "squeezenet1_0"},
                      {"pool_rounding": "floor", "stem_padding": 0}, squeezenet_mindcv.LINEAGE),
    "squeezenet1_1": ("squeezenet", {"squeezenet1_1": "squeezenet1_1"},
                      {"pool_rounding": "floor", "stem_padding": 1}, squeezenet_mindcv.LINEAGE),
    "xception": ("xception", {"xception": "xception"}, {"pool_padding": "same"}, xception_mindcv.LINEAGE),
}
CASES = [(family, theirs, ours)
         for family, (_, names, _, _) in FAMILIES.items() for theirs, ours in names.items()]


@pytest.fixture(scope="module", autouse=True)
def _pynative():
    with pynative_mode():
        yield


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """mindcv's name -> (its network, its checkpoint, its logits on the probe batch)."""
    files = {}
    for module, names, _, _ in FAMILIES.values():
        inputs, more = publish_mindcv(importlib.import_module(f"mindcv.models.{module}"), names,
                                      tmp_path_factory.mktemp(module))
        files.update(more)
    return inputs, files


@pytest.mark.parametrize("family,theirs,ours", CASES)
def test_every_mindcv_file_loads_directly_and_matches_mindcv(published, family, theirs, ours):
    inputs, files = published
    _, src, expected = files[theirs]
    params = read_checkpoint(src)
    _, _, options, lineage = FAMILIES[family]
    assert identify(params) is lineage
    net, loaded = load_network(src)  # Xception's names are converted in memory
    assert (loaded.model, loaded.options) == (ours, options)
    if not lineage.renames:
        assert describe_checkpoint(params, source=str(src)) == loaded  # recognised from the shapes
    assert relative_difference(net(inputs).asnumpy(), expected) <= RELATIVE


@pytest.mark.parametrize("family,theirs,ours", CASES)
def test_every_mindcv_file_converts_and_matches_mindcv(published, tmp_path, capsys, family, theirs, ours):
    inputs, files = published
    _, src, expected = files[theirs]
    dst = tmp_path / "converted.ckpt"
    assert convert_main([str(src), str(dst)]) == 0  # no --source: recognised from the names
    assert "from mindcv weights" in capsys.readouterr().out
    net, description = load_network(dst)
    assert (description.model, description.options, description.preprocessing, description.num_classes) == \
        (ours, FAMILIES[family][2], "imagenet", CLASSES)
    converted, source = read_checkpoint(dst), read_checkpoint(src)
    assert not any(key.split(".")[0] in ("adam_m", "adam_v", "ema", "global_step") for key in converted)
    if not FAMILIES[family][3].renames:
        for param in net.get_parameters():
            np.testing.assert_array_equal(converted[param.name].asnumpy(), source[param.name].asnumpy())
    assert relative_difference(net(inputs).asnumpy(), expected) <= RELATIVE
