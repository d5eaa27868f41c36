"""Parity with the publishers' own code: torchvision's ShuffleNetV2, MobileNetV2 and SqueezeNet and
timm's MobileNetV1 (`mobilenetv1_100`) and Xception (`legacy_xception`).

Why: `test_convert_v2.py` and `test_convert_survey.py` compare with the PyTorch rebuilds in
`shufflenet.lineages.torch_*`, which import this project's own architecture tables, so an error
shared by a rebuild and our network (operation order, shuffle position, padding, where an
activation sits) would pass there. Here the network is built by the publisher's unmodified model
code (torchvision 0.28.0, timm 1.0.31, from their wheels: see `publisher_code.py`), randomised,
saved as the publisher releases it and converted by `convert_file`, the path of `shufflenet
convert`; its logits must match our MindSpore network's. The rebuilds stay in use (`shufflenet
convert --check-size` and `shufflenet benchmark` run them), so each is anchored here too: the
publisher's state dict loads into it strictly and gives the publisher's logits.

Left out: Megvii's ShuffleNetV1, V2 and V2+ (github.com/megvii-model/ShuffleNet-Series). Their
code is no package on the registry and no output of it is stored (`tests/golden` holds our own
network's logits), so `torch_shufflenet_v1_megvii` and `torch_shufflenet_v2_megvii` are checked
against our MindSpore network only (`test_convert.py`, `test_convert_v2.py`), not against
Megvii's code.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import mindspore as ms
import pytest
from conftest import randomise_torch, relative_difference
from publisher_code import import_publishers

from shufflenet import list_models
from shufflenet.data.presets import get_preprocessing
from shufflenet.engine.context import pynative_mode
from shufflenet.export import probe_batch
from shufflenet.inference import load_network
from shufflenet.lineages import (
    Lineage,
    convert_file,
    mobilenet_v1_timm,
    mobilenet_v2_torchvision,
    shufflenet_v2_torchvision,
    squeezenet_torchvision,
    torch_reference,
    xception_timm,
)
from shufflenet.models import describe, model_arch, model_entry

torch = pytest.importorskip("torch")

SIZE = 64
CLASSES = 10
#: Largest |ours - publisher's| logit relative to the largest logit, as the converter tests allow.
RELATIVE = 1e-5
#: The same for a rebuild: PyTorch both sides, the same operations (measured: 0, bit-identical).
REBUILD_RELATIVE = 1e-6

#: (torchvision, timm, our model's name) -> the publisher's network of that model, untrained.
Build = Callable[[ModuleType, ModuleType, str], "torch.nn.Module"]

#: family -> (lineage, the publisher's code building our model, the file it releases).
PUBLISHERS: dict[str, tuple[Lineage, Build, str]] = {
    "shufflenet_v2": (shufflenet_v2_torchvision.LINEAGE,
                      lambda tv, _, name: getattr(tv.models, name)(num_classes=CLASSES), "shufflenetv2.pth"),
    "mobilenet_v2": (mobilenet_v2_torchvision.LINEAGE,
                     lambda tv, _, name: tv.models.mobilenet_v2(width_mult=model_arch(name)["width"],
                                                                num_classes=CLASSES),
                     "mobilenet_v2.pth"),
    "squeezenet": (squeezenet_torchvision.LINEAGE,
                   lambda tv, _, name: getattr(tv.models, name)(num_classes=CLASSES), "squeezenet.pth"),
    "mobilenet_v1": (mobilenet_v1_timm.LINEAGE,
                     lambda _, timm, name: timm.create_model("mobilenetv1_100", num_classes=CLASSES),
                     "pytorch_model.bin"),
    "xception": (xception_timm.LINEAGE,
                 lambda _, timm, name: timm.create_model("legacy_xception", num_classes=CLASSES),
                 "xception-43020ad28.pth"),
}
#: One model per lineage through our MindSpore network (a graph each costs seconds).
CONVERTED = ["shufflenet_v2_x0_5", "mobilenet_v2_035", "squeezenet1_1", "mobilenet_v1_100", "xception"]
#: Every model the publisher's code builds, against the rebuild (PyTorch alone: milliseconds).
#: timm registers MobileNetV1 at width 1.0 only (1.25 is no model of ours).
ANCHORED = [*list_models("shufflenet_v2"), *list_models("mobilenet_v2"), *list_models("squeezenet"),
            "mobilenet_v1_100", "xception"]


@pytest.fixture(scope="module")
def publishers() -> tuple[ModuleType, ModuleType]:
    """torchvision and timm; a missing copy fails rather than skips, as missing test extras do."""
    try:
        return import_publishers()
    except FileNotFoundError as err:
        pytest.fail(str(err), pytrace=False)


def _publishers_network(publishers: tuple[ModuleType, ModuleType],
                        name: str) -> tuple[torch.nn.Module, Lineage, str]:
    """The publisher's network of `name`, randomised, in inference mode, and its lineage and file.
    Variance gain 1: with He's 2, MobileNetV2's random residual blocks make float32 rounding alone
    1e-5 of the logits."""
    lineage, build, file_name = PUBLISHERS[model_entry(name).family]
    return randomise_torch(build(*publishers, name), gain=1.0), lineage, file_name


@pytest.mark.parametrize("name", CONVERTED)
def test_converted_publishers_network_matches_ours(tmp_path: Path, publishers, name: str) -> None:
    """The publisher's network, released and converted as a user would, gives our network's logits."""
    model, lineage, file_name = _publishers_network(publishers, name)
    src = tmp_path / file_name
    torch.save(model.state_dict(), src)
    dst, description, found = convert_file(src, tmp_path / "converted.ckpt")
    assert found is lineage and (description.model, description.num_classes) == (name, CLASSES)
    inputs = probe_batch(2, SIZE, get_preprocessing(description.preprocessing), seed=3)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    with pynative_mode():
        actual = load_network(dst)[0](ms.Tensor(inputs)).asnumpy()
    assert relative_difference(actual, expected) <= RELATIVE


@pytest.mark.parametrize("name", ANCHORED)
def test_rebuild_matches_the_publishers_network(publishers, name: str) -> None:
    """The rebuild `shufflenet convert` compares with: the publisher's names, its outputs."""
    model, lineage, _ = _publishers_network(publishers, name)
    rebuild = torch_reference(describe(name, CLASSES), lineage)
    rebuild.load_state_dict(model.state_dict(), strict=True)
    inputs = torch.from_numpy(probe_batch(2, SIZE, get_preprocessing("imagenet"), seed=3))
    with torch.no_grad():
        assert relative_difference(rebuild.eval()(inputs).numpy(), model(inputs).numpy()) <= REBUILD_RELATIVE
