"""`--preprocessing megvii` feeds the pixels Megvii's own evaluation computes (golden test).

Megvii's ShuffleNet-Series `ShuffleNetV1/train.py` evaluates with `OpencvResize(256)` (shorter side
to 256, longer side `int(256 / short * long + 0.5)`, `cv2.resize(..., INTER_LINEAR)`), then
torchvision's `CenterCrop(224)` (offsets `int(round((side - 224) / 2.0))`), then `ToBGRTensor`
(BGR, 0..255 as float). The reference below is that pipeline with OpenCV itself; the images
have odd sizes, where rounding and truncating differ.
"""
import numpy as np
import pytest
from PIL import Image

from shufflenet.data import PipelineSpec, create_dataset
from shufflenet.data.images import load_image
from shufflenet.data.pipeline import preprocess_image
from shufflenet.data.presets import Preprocessing, get_preprocessing
from shufflenet.data.sources import load_image_folder

cv2 = pytest.importorskip("cv2")

#: (width, height): landscape, portrait and a small image that is scaled up; 500x375 is even.
SIZES = [(333, 250), (251, 377), (97, 131), (500, 375)]


def megvii_eval(image: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
    """Megvii's evaluation transforms on an RGB PIL image, as `train.py` runs them: (3, crop, crop)."""
    img = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # OpencvResize works on BGR
    height, width, _ = img.shape
    target = ((int(resize / height * width + 0.5), resize) if height < width
              else (resize, int(resize / width * height + 0.5)))
    img = cv2.resize(img, target, interpolation=cv2.INTER_LINEAR)[:, :, ::-1]  # back to RGB
    top = int(round((img.shape[0] - crop) / 2.0))  # torchvision's center_crop
    left = int(round((img.shape[1] - crop) / 2.0))
    img = img[top:top + crop, left:left + crop]
    return np.transpose(img[:, :, ::-1], (2, 0, 1)).astype(np.float32)  # ToBGRTensor


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth gradient with noise, so resampling differences show in every pixel."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) * 127 / (width + height)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("width,height", SIZES)
def test_single_images_get_megvii_pixels_exactly(width, height):
    image = _photo(width, height, seed=width)
    ours = preprocess_image(image, 224, get_preprocessing("megvii"))
    np.testing.assert_array_equal(ours, megvii_eval(image))


def test_the_difference_the_rounding_makes_is_real():
    """Guard for the golden test: MindSpore's own rounding (the `imagenet` geometry) differs."""
    image = _photo(333, 250, seed=1)
    truncated = preprocess_image(image, 224, Preprocessing((0.0,) * 3, (1.0,) * 3, bgr=True))
    assert truncated.shape == (3, 224, 224)
    assert np.abs(truncated - megvii_eval(image)).max() > 10


def test_evaluation_pipeline_gets_megvii_pixels_exactly(tmp_path):
    """The dataset pipeline (PNG files, decoded by Pillow, one batch) matches image by image."""
    folder = tmp_path / "val" / "thing"
    folder.mkdir(parents=True)
    (tmp_path / "train" / "thing").mkdir(parents=True)
    for i, (width, height) in enumerate(SIZES):
        _photo(width, height, seed=i).save(folder / f"{i}.png")
        _photo(width, height, seed=i).save(tmp_path / "train" / "thing" / f"{i}.png")
    source = load_image_folder(str(tmp_path), "val")
    spec = PipelineSpec(False, batch_size=len(SIZES), image_size=224,
                        preprocessing=get_preprocessing("megvii"), num_workers=2)
    dataset, _ = create_dataset(source, spec)
    # Read to the end: an iterator left half-read is torn down later, in whatever test forks next.
    (batch,) = [row["image"] for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1)]
    expected = np.stack([megvii_eval(load_image(folder / f"{i}.png")) for i in range(len(SIZES))])
    np.testing.assert_array_equal(batch, expected)


def test_exported_sidecars_carry_the_geometry_to_predict(tmp_path):
    """An exported model's sidecar records the geometry, so predict on it resizes as Megvii."""
    from shufflenet.inference.sidecar import make_sidecar, sidecar_preprocessing
    from shufflenet.models import describe

    description = describe("shufflenet_v1_g3_x0_5", 10, preprocessing="megvii")
    exported = tmp_path / "m.mindir"
    exported.write_bytes(b"stands in for a MINDIR")
    sidecar = make_sidecar(description, "MINDIR", exported, [1, 3, 224, 224], {}, "2.10.0")
    assert sidecar["preprocessing"]["eval_geometry"] == "megvii"
    assert sidecar_preprocessing(sidecar) == get_preprocessing("megvii")
    del sidecar["preprocessing"]["eval_geometry"]  # written before the field existed
    assert sidecar_preprocessing(sidecar).eval_geometry == "mindspore"
