"""Inference for a person: preprocessing as recorded, top classes per image, bad files skipped."""

import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic
from PIL import Image

from shufflenet.cli.predict import main as predict_main
from shufflenet.cli.predict import softmax
from shufflenet.data.images import list_images, load_image
from shufflenet.data.pipeline import preprocess_image
from shufflenet.data.presets import get_preprocessing
from shufflenet.export import export_model, probe_batch
from shufflenet.inference.predictor import from_network
from shufflenet.models import META_KEY, ModelDescription, create_model, describe
from shufflenet.utils.checkpoint import save_checkpoint

SIZE = 48
CLASSES = ["cat", "dog", "fox", "owl", "yak", "emu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A checkpoint with its description, its dynamic-batch MINDIR export and an ONNX export
    with a fixed batch of 3 (predict's batches of 2 are padded to it)."""
    folder = tmp_path_factory.mktemp("model")
    net = create_model("shufflenet_v1_g3_x0_5", num_classes=len(CLASSES))
    fill_deterministic(net, 2)
    net.set_train(False)
    # Scale the classifier so logits are O(1): probabilities spread over classes, no ties at 0.
    probe = ms.Tensor(probe_batch(2, SIZE, get_preprocessing("imagenet")))
    scale = 3.0 / float(np.abs(net(probe).asnumpy()).max())
    net.classifier.weight.set_data(net.classifier.weight * scale)
    net.classifier.bias.set_data(net.classifier.bias * scale)
    description = ModelDescription("shufflenet_v1_g3_x0_5", len(CLASSES), SIZE, "imagenet", {}, CLASSES)
    ckpt = save_checkpoint(net, folder / "net.ckpt", extra={META_KEY: description.to_json()})
    mindir = export_model(net, "MINDIR", folder / "net", 0, description)
    onnx = export_model(net, "ONNX", folder / "net", 3, description)
    return net, ckpt, mindir, onnx


@pytest.fixture
def images(tmp_path):
    """Three generated images of different sizes and formats, one in a subfolder, and a text file."""
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    paths = [tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "sub" / "c.bmp"]
    for i, path in enumerate(paths):
        Image.fromarray(rng.integers(0, 256, (40 + 17 * i, 64 - 9 * i, 3), dtype=np.uint8)).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path, paths


def _expected_top(net, path):
    inputs = preprocess_image(load_image(path), SIZE, get_preprocessing("imagenet"))[None]
    probs = softmax(net(ms.Tensor(inputs)).asnumpy())[0]
    best = np.argsort(-probs)[:5]
    return [(CLASSES[i], probs[i]) for i in best]


def _parse(stdout):
    """{image path: [(class, probability), ...]} from predict's output."""
    results, current = {}, None
    for line in stdout.splitlines():
        if not line.startswith("  "):
            current = line
            results[current] = []
        else:
            _, name, prob = line.split()
            results[current].append((name, float(prob)))
    return results


@pytest.mark.parametrize("kind", ["mindir", "ckpt", "onnx"])
def test_predict_prints_top5_and_skips_a_non_image(model, images, capsys, kind):
    net, ckpt, mindir, onnx = model
    folder, paths = images
    model_file = {"mindir": mindir, "ckpt": ckpt, "onnx": onnx}[kind]
    code = predict_main([str(model_file), str(folder), "--batch-size", "2"])
    out, err = capsys.readouterr()
    assert code == 1  # one file was skipped
    assert "notes.txt is not a readable image" in err and len(err.strip().splitlines()) == 1
    results = _parse(out)
    assert sorted(results) == sorted(map(str, paths))
    for path in paths:
        expected = _expected_top(net, path)
        assert [name for name, _ in results[str(path)]] == [name for name, _ in expected]
        np.testing.assert_allclose([p for _, p in results[str(path)]], [p for _, p in expected], atol=1e-4)
        assert expected[-1][1] > 1e-3  # a real ranking, not one certain class and ties


def test_predict_exit_status_is_zero_when_every_file_is_an_image(model, images, capsys):
    _, _, mindir, _ = model
    _, paths = images
    assert predict_main([str(mindir), str(paths[0]), "--top-k", "2"]) == 0
    assert len(_parse(capsys.readouterr().out)[str(paths[0])]) == 2


def test_predict_refuses_checkpoint_flags_for_an_exported_file(model, images, capsys):
    _, _, mindir, _ = model
    assert predict_main([str(mindir), str(images[1][0]), "--image-size", "64"]) == 1
    assert "--image-size apply to checkpoints" in capsys.readouterr().err


def test_predict_without_a_sidecar_says_what_is_missing(model, images, tmp_path, capsys):
    _, _, mindir, _ = model
    lonely = tmp_path / "lonely.mindir"
    lonely.write_bytes(mindir.read_bytes())
    assert predict_main([str(lonely), str(images[1][0])]) == 1
    assert "lonely.mindir.json not found" in capsys.readouterr().err


def test_preprocessing_resizes_crops_orders_channels_and_normalises():
    red = Image.new("RGB", (80, 60), (255, 0, 0))
    rgb = preprocess_image(red, 32, get_preprocessing("imagenet"))
    assert rgb.shape == (3, 32, 32) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[:, 0, 0], (np.array([255, 0, 0]) - 255 * np.array([0.485, 0.456, 0.406]))
                               / (255 * np.array([0.229, 0.224, 0.225])), rtol=1e-4)
    bgr = preprocess_image(red, 32, get_preprocessing("megvii"))
    np.testing.assert_array_equal(bgr[:, 5, 5], [0.0, 0.0, 255.0])


def test_list_images_walks_folders_and_rejects_missing_paths(images):
    folder, paths = images
    assert list_images([folder]) == sorted([*paths, folder / "notes.txt"])
    with pytest.raises(ValueError, match="does not exist"):
        list_images([folder / "nope.png"])


def test_a_networks_short_batch_reuses_its_compiled_graph():
    """An evaluation's last, short batch is padded to the batch the graph was compiled for (no
    second compile), and the padding changes no image's logits (inference BatchNorm is per image)."""
    net = create_model("shufflenet_v1_g3_x0_25", num_classes=4)
    fill_deterministic(net)
    predictor = from_network(net, describe("shufflenet_v1_g3_x0_25", 4))
    fed, run = [], predictor.run
    predictor.run = lambda images: fed.append(len(images)) or run(images)
    images = probe_batch(6, 32, get_preprocessing("imagenet"), seed=1)
    full, short = predictor(images), predictor(images[:4])
    assert fed == [6, 6] and short.shape == (4, 4)
    np.testing.assert_allclose(short, full[:4], rtol=1e-6, atol=1e-6)
