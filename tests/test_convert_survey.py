"""Importing the survey's networks from PyTorch: timm's MobileNetV1, torchvision's MobileNetV2 and
SqueezeNet, Cadene's and timm's Xception.

The references are the publishers' networks rebuilt from torch primitives with their exact
state-dict names (`shufflenet.lineages.torch_<family>_<publisher>`, the peers `shufflenet convert`
and the benchmark run), randomised and saved as the publishers release them. Each rebuild is tied
to timm's and torchvision's own code in `test_publisher_code.py` (same names, bit-identical
logits), which also converts one model per family built by that code. One conversion per family
goes through `shufflenet convert` and its graph-mode comparison; the others compare in PyNative
mode.
"""
from pathlib import Path

import pytest

from shufflenet import list_models
from shufflenet.cli.convert import main as convert_main
from shufflenet.inference import load_network
from shufflenet.lineages import (
    LINEAGES,
    convert_file,
    guess_origins,
    identify,
    mobilenet_v1_mindcv,
    mobilenet_v1_timm,
    mobilenet_v2_mindcv,
    mobilenet_v2_torchvision,
    squeezenet_mindcv,
    squeezenet_torchvision,
    torch_reference,
    xception_mindcv,
    xception_timm,
)
from shufflenet.models import describe, model_arch, model_entry

torch = pytest.importorskip("torch")
from conftest import (  # noqa: E402  (after the skip: they are only used with torch)
    convert_and_check,
    lineage_preprocessing,
    mindspore_names,
    randomise_torch,
    relative_logit_difference,
    torch_names,
)

from shufflenet.lineages.torch_mobilenet_v1_timm import TimmMobileNetV1  # noqa: E402
from shufflenet.lineages.torch_mobilenet_v2_torchvision import TorchvisionMobileNetV2  # noqa: E402
from shufflenet.lineages.torch_squeezenet_torchvision import TorchvisionSqueezeNet  # noqa: E402
from shufflenet.lineages.torch_xception_timm import CadeneXception  # noqa: E402

SIZE = 64
CLASSES = 10
#: Largest |ours - publisher's| logit relative to the largest logit.
RELATIVE = 1e-5
#: family -> (the publisher's network of a model's architecture, file name, our options, lineage).
PUBLISHERS = {
    "mobilenet_v1": (lambda arch, classes: TimmMobileNetV1(arch["width"], classes), "pytorch_model.bin",
                     {"activation": "relu6"}, mobilenet_v1_timm.LINEAGE),
    "mobilenet_v2": (lambda arch, classes: TorchvisionMobileNetV2(arch["width"], classes), "mobilenet_v2.pth",
                     {}, mobilenet_v2_torchvision.LINEAGE),
    "squeezenet": (lambda arch, classes: TorchvisionSqueezeNet(arch["version"], classes), "squeezenet.pth",
                   {"pool_rounding": "ceil", "stem_padding": 0}, squeezenet_torchvision.LINEAGE),
    "xception": (lambda arch, classes: CadeneXception(classes), "xception-43020ad28.pth",
                 {"pool_padding": "symmetric"}, xception_timm.LINEAGE),
}
CASES = [(family, name) for family in PUBLISHERS for name in list_models(family)]


def _publish(folder: Path, family: str, name: str):
    """The publisher's network of `name`, randomised, saved as the publisher does.

    Variance gain 1: with He's 2, MobileNetV2's seventeen random residual blocks are chaotic
    enough that PyTorch's own float32 logits differ from its float64 ones by 1e-5.
    """
    build, file_name, _, _ = PUBLISHERS[family]
    model = randomise_torch(build(model_arch(name), CLASSES), gain=1.0)
    path = folder / file_name
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("family,name", CASES)
def test_import_matches_the_publishers_network(tmp_path, family, name):
    model, src = _publish(tmp_path, family, name)
    dst, description, lineage = convert_file(src, tmp_path / "converted.ckpt")
    assert lineage is PUBLISHERS[family][3]
    preprocessing = lineage_preprocessing(lineage, name)  # timm's MobileNetV1: Inception statistics
    assert relative_logit_difference(SIZE, model, dst, preprocessing) <= RELATIVE
    assert (description.model, description.options, description.preprocessing, description.num_classes) == \
        (name, PUBLISHERS[family][2], preprocessing, CLASSES)
    assert load_network(dst)[1] == description


@pytest.mark.parametrize("family,name", [("mobilenet_v1", "mobilenet_v1_050"),
                                         ("mobilenet_v2", "mobilenet_v2_035"),
                                         ("squeezenet", "squeezenet1_1"), ("xception", "xception")])
def test_convert_command_checks_against_the_publishers_network(tmp_path, capsys, family, name):
    _, src = _publish(tmp_path, family, name)
    convert_and_check(src, tmp_path / "converted.ckpt", capsys, SIZE, RELATIVE)


def test_timms_safetensors_release_converts_and_bfloat16_widens_exactly(tmp_path):
    """timm publishes `model.safetensors`; it is read with numpy alone (no safetensors at run time)."""
    safetensors = pytest.importorskip("safetensors.torch")
    model, _ = _publish(tmp_path, "mobilenet_v1", "mobilenet_v1_050")
    src = tmp_path / "model.safetensors"
    safetensors.save_file(model.state_dict(), str(src))
    dst, description, lineage = convert_file(src, tmp_path / "converted.ckpt")
    assert lineage is mobilenet_v1_timm.LINEAGE and description.model == "mobilenet_v1_050"
    assert relative_logit_difference(SIZE, model, dst, "imagenet") <= RELATIVE

    from shufflenet.lineages.common import read_safetensors

    halves = {"a": torch.randn(3, 4).to(torch.bfloat16), "b": torch.randn(5).half()}
    safetensors.save_file(halves, str(tmp_path / "halves.safetensors"))
    read = read_safetensors(tmp_path / "halves.safetensors")
    for key, tensor in halves.items():
        assert (read[key] == tensor.float().numpy()).all(), key
    (tmp_path / "cut.safetensors").write_bytes(src.read_bytes()[:-100])
    assert convert_main([str(tmp_path / "cut.safetensors"), str(tmp_path / "cut.ckpt")]) == 1


def test_cadenes_first_xception_release_with_matrix_pointwise_weights_converts(tmp_path):
    """`xception-b5690688.pth` (before PyTorch 0.4) held the 1x1 pointwise weights as matrices."""
    model, src = _publish(tmp_path, "xception", "xception")
    state = {key: value[:, :, 0, 0] if key.endswith("pointwise.weight") else value
             for key, value in model.state_dict().items()}
    state["last_linear.weight"], state["last_linear.bias"] = state.pop("fc.weight"), state.pop("fc.bias")
    torch.save(state, tmp_path / "xception-b5690688.pth")
    dst, description, _ = convert_file(tmp_path / "xception-b5690688.pth", tmp_path / "old.ckpt")
    assert relative_logit_difference(SIZE, model, dst, "inception") <= RELATIVE


@pytest.mark.parametrize("name,extra,network", [
    ("mobilenet_v1_025", "blocks.4.2.conv_dw.weight", "timm's MobileNetV1"),  # its last stage has 2
    ("mobilenet_v1_025", "blocks.0.0.se.conv_reduce.weight", "timm's MobileNetV1"),
    ("mobilenet_v2_035", "features.1.conv.3.weight", "torchvision's MobileNetV2"),  # no expansion there
    ("squeezenet1_1", "features.13.squeeze.weight", "torchvision's SqueezeNet"),
    ("xception", "block12.rep.7.pointwise.weight", "Cadene's and timm's Xception"),
])
def test_entries_of_no_layer_are_refused_by_name(tmp_path, capsys, name, extra, network):
    _, src = _publish(tmp_path, model_entry(name).family, name)
    state = torch.load(src, weights_only=True)
    state[extra] = torch.zeros(3)
    torch.save(state, src)
    assert convert_main([str(src), str(tmp_path / "out.ckpt")]) == 1
    assert f"entries of no layer of {network}: {extra}" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


def test_timms_wider_or_headed_mobilenets_are_refused_with_a_reason(tmp_path, capsys):
    model = TimmMobileNetV1(1.0, CLASSES)
    state = model.state_dict()
    state["conv_head.weight"] = torch.zeros(1280, 1024, 1, 1)  # mobilenetv1_100h, or a timm MobileNetV2
    torch.save(state, tmp_path / "headed.pth")
    assert convert_main([str(tmp_path / "headed.pth"), str(tmp_path / "a.ckpt")]) == 1
    assert "holds weights of no known lineage" in capsys.readouterr().err
    torch.save(TimmMobileNetV1(1.25, CLASSES).state_dict(), tmp_path / "wide.pth")  # mobilenetv1_125
    assert convert_main([str(tmp_path / "wide.pth"), str(tmp_path / "b.ckpt")]) == 1
    assert "MobileNetV1 channels (40, 80" in capsys.readouterr().err


def test_each_publishers_names_pick_its_lineage_alone():
    files = {
        "timm v1": (torch_names(TimmMobileNetV1(1.0)), mobilenet_v1_timm.LINEAGE),
        "torchvision v2": (torch_names(TorchvisionMobileNetV2(1.0)), mobilenet_v2_torchvision.LINEAGE),
        "mindcv v1": (mindspore_names("mobilenet_v1_100"), mobilenet_v1_mindcv.LINEAGE),
        "mindcv v2": (mindspore_names("mobilenet_v2_100"), mobilenet_v2_mindcv.LINEAGE),
        "timm xception": (torch_names(CadeneXception()), xception_timm.LINEAGE),
        "mindcv xception": ({_mindcv_xception_name(key): None for key in mindspore_names("xception")},
                            xception_mindcv.LINEAGE),
        # torchvision's SqueezeNet names are mindcv's: the file's extension (.pth, .ckpt) decides
        "torchvision squeezenet": (torch_names(TorchvisionSqueezeNet("1_0")), squeezenet_torchvision.LINEAGE),
        "mindcv squeezenet": (mindspore_names("squeezenet1_0"), squeezenet_mindcv.LINEAGE),
    }
    for kind, (names, expected) in files.items():
        found = [lineage for lineage in LINEAGES if lineage.matches(names)]
        if expected.family == "squeezenet":
            found = [lineage for lineage in found if lineage.origin in guess_origins(Path(
                "w.pth" if expected.origin == "torchvision" else "w.ckpt"))]
        assert found == [expected], kind
    assert identify(files["mindcv v1"][0]) is mobilenet_v1_mindcv.LINEAGE
    assert identify(files["mindcv squeezenet"][0]) is squeezenet_mindcv.LINEAGE
    assert "timm" in guess_origins(Path("pytorch_model.bin"))


def _mindcv_xception_name(key: str) -> str:
    """Ours -> mindcv's: `block12.` -> `blocks.11.`, `fc.` -> `classifier.`."""
    head, _, rest = key.partition(".")
    if head.startswith("block"):
        return f"blocks.{int(head[5:]) - 1}.{rest}"
    return f"classifier.{rest}" if head == "fc" else key


@pytest.mark.parametrize("name,peer", [("mobilenet_v1_100", TimmMobileNetV1),
                                       ("mobilenet_v2_100", TorchvisionMobileNetV2),
                                       ("squeezenet1_1", TorchvisionSqueezeNet),
                                       ("xception", CadeneXception)])
def test_the_pytorch_peer_of_each_family(name, peer):
    assert isinstance(torch_reference(describe(name, CLASSES)), peer)
