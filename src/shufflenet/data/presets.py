"""Input conventions: the single table of how pixels are turned into network inputs.

Training, evaluation, export sidecars and inference all read their mean, std and channel order
from here. Means and stds are in 0..255 pixel units, in the channel order the network sees.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False  # feed channels as B, G, R (Megvii's OpenCV-based pipeline)
    #: Evaluation resizes the shorter side to image_size / eval_crop, then centre-crops
    #: image_size (0.875: 256 -> 224, the zoo's and mindcv's eval); 1.0 resizes straight.
    eval_crop: float = 0.875
    #: How that resize and crop round (see `EVAL_GEOMETRIES`).
    eval_geometry: str = "mindspore"

    def __post_init__(self) -> None:
        if self.eval_geometry not in EVAL_GEOMETRIES:
            raise ValueError(f"eval_geometry must be one of {', '.join(EVAL_GEOMETRIES)}, "
                             f"got {self.eval_geometry!r}")

    def to_dict(self) -> dict:
        return asdict(self)


#: "mindspore": MindSpore's `Resize(side)` (longer side truncated: 333x250 -> 340x256) and
#: `CenterCrop` (offsets floored). "megvii": Megvii's `OpencvResize` (longer side
#: int(x + 0.5): 341x256, OpenCV bilinear) and torchvision's `CenterCrop` (offsets
#: round((size - crop) / 2), halves to even), so its weights see the pixels it was scored on.
EVAL_GEOMETRIES = ("mindspore", "megvii")


def _scaled(values: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(round(v * 255, 4) for v in values)


PRESETS: dict[str, Preprocessing] = {
    # ImageNet statistics, as in the model zoo, mindcv and torchvision.
    "imagenet": Preprocessing(_scaled((0.485, 0.456, 0.406)), _scaled((0.229, 0.224, 0.225))),
    # The MindSpore ShuffleNet tutorial's CIFAR-10 statistics.
    "cifar10": Preprocessing(
        _scaled((0.4914, 0.4822, 0.4465)), _scaled((0.2023, 0.1994, 0.2010)), eval_crop=1.0
    ),
    # Megvii's released weights expect BGR pixels in 0..255 with no normalisation, resized and
    # cropped as Megvii's evaluation does.
    "megvii": Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), bgr=True, eval_geometry="megvii"),
    # Inception-style input, [-1, 1], resized to image_size / 0.8975 (333 for 299) and cropped:
    # Cadene's and timm's Xception.
    "inception": Preprocessing((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), eval_crop=0.8975),
    # The evaluations of particular published weights (each publisher's code, `pretrained/published.yaml`):
    # torchvision's IMAGENET1K_V2 recipe (MobileNetV2 V2, ShuffleNetV2 1.5x and 2.0x): 232 -> 224;
    "torchvision_v2": Preprocessing(_scaled((0.485, 0.456, 0.406)), _scaled((0.229, 0.224, 0.225)),
                                    eval_crop=224 / 232),
    # the model zoo's ShuffleNetV1 (`src/dataset.py`): 239 -> 224;
    "zoo_shufflenet_v1": Preprocessing(_scaled((0.485, 0.456, 0.406)), _scaled((0.229, 0.224, 0.225)),
                                       eval_crop=224 / 239),
    # timm's MobileNetV1 (`mobilenetv1_100.ra4_e3600_r224_in1k`): Inception statistics, 256 -> 224.
    "timm_mobilenet_v1": Preprocessing((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # scikit-learn's digits (grey, replicated to 3 channels): centred on mid-grey.
    "digits": Preprocessing((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), eval_crop=1.0),
}


def get_preprocessing(name: str) -> Preprocessing:
    if name not in PRESETS:
        raise ValueError(f"unknown input convention {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def eval_resize(image_size: int, preprocessing: Preprocessing) -> int:
    """Shorter-side length to resize to before the evaluation centre crop, rounded down as
    timm's and mindcv's `int(size / crop_pct)` (299 / 0.875 -> 341), exact ratios kept exact."""
    return int(image_size / preprocessing.eval_crop + 1e-6)


def probe_batch(batch: int, image_size: int, preprocessing: Preprocessing, seed: int = 0) -> np.ndarray:
    """Random 0..255 pixels, preprocessed as the network's inputs are: realistic magnitudes."""
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype(np.float32)
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(0, 3, 1, 2))
