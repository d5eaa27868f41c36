"""Every family through what a user runs by default, in subprocesses: `train.py` on the bundled
digits with its default kernels (the C++ CPU kernels wherever they build), fine-tuning from a
1000-class checkpoint of the same model, the MINDIR it exports, and `shufflenet predict` on it.
A change to a shared path fails here for the family it breaks."""
import os
import re
import shutil

import numpy as np
import pytest
from conftest import FAMILY_MODELS, fill_deterministic, run
from PIL import Image

from shufflenet.models import META_KEY, classes_in, create_model, describe, head_prefix, list_families
from shufflenet.utils.checkpoint import read_checkpoint, save_checkpoint

#: Short and small: one epoch of the 1,437 training digits at 32 px, in 12 steps.
SHORT = ["--epochs", "1", "--image-size", "32", "--batch-size", "128", "--num-workers", "1"]


def test_every_registered_family_has_a_model_here():
    assert sorted(FAMILY_MODELS) == sorted(list_families())


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_the_declared_head_is_what_holds_the_classes(family):
    """What fine-tuning re-initialises and where class counts are read is the cell that
    `reset_classifier` replaces: the parameters whose shape follows the class count."""
    model = FAMILY_MODELS[family]
    shapes = {p.name: tuple(p.shape) for p in create_model(model, num_classes=7).get_parameters()}
    other = {p.name: tuple(p.shape) for p in create_model(model, num_classes=9).get_parameters()}
    assert shapes.keys() == other.keys()
    follows_classes = sorted(name for name in shapes if shapes[name] != other[name])
    assert follows_classes == sorted(name for name in shapes if name.startswith(head_prefix(model)))
    assert classes_in(model, shapes) == 7


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_family_trains_fine_tunes_exports_and_predicts(family, tmp_path):
    model = FAMILY_MODELS[family]
    imagenet = create_model(model, num_classes=1000)
    fill_deterministic(imagenet)
    head = [p.name for p in imagenet.get_parameters() if p.name.startswith(head_prefix(model))]
    pretrained = save_checkpoint(imagenet, tmp_path / "imagenet.ckpt",
                                 extra={META_KEY: describe(model, 1000).to_json()})
    out = tmp_path / "run"
    trained = run("train.py", "--model", model, "--pretrained", pretrained, *SHORT, "--output-dir", out,
                  timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = (out / "train.log").read_text()
    if shutil.which(os.environ.get("CXX", "g++")):
        assert "C++ CPU kernels:" in log, log
    assert f"(new classifier: {head})" in log, log

    # The body started from the checkpoint (twelve small steps keep it close), the head afresh.
    final = read_checkpoint(out / "final.ckpt")
    start = {p.name: p.asnumpy() for p in imagenet.get_parameters()}
    body = [name for name in start if name not in head and name.endswith("weight") and start[name].ndim == 4]
    assert len(body) > 2
    for name in (body[0], body[len(body) // 2], body[-1]):
        assert correlation(final[name].asnumpy(), start[name]) > 0.9, name
    assert final[head[0]].shape[0] == 10

    image = tmp_path / "seven.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)).save(image)
    predicted = run("predict", out / "model.mindir", image, "--top-k", "3")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    ranked = re.findall(r"^\s+\d\. (\d)\s+([0-9.]+)$", predicted.stdout, re.M)  # digit classes
    assert len(ranked) == 3, predicted.stdout
    probabilities = [float(p) for _, p in ranked]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
