"""Single images to network inputs, for inference outside a dataset pipeline (predict, probes).

Applies `pipeline.eval_transforms`, the evaluation pipeline's own resize, crop and
normalisation, so a single image gets the numbers a dataset batch would.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .presets import Preprocessing

#: Pillow modes of more than 8 bits per sample, whose `convert("RGB")` clips instead of scaling.
WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I": 65535, "F": 1.0}


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, with 16-bit and float greyscale scaled to 0..255 rather than clipped."""
    if image.mode in WIDE_MODES:
        values = np.asarray(image, np.float64) * (255.0 / WIDE_MODES[image.mode])
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB; anything PIL cannot decode is a ValueError naming the file."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not a readable image ({type(err).__name__}: {err})") from None


def preprocess_image(image: Image.Image, image_size: int, preprocessing: Preprocessing) -> np.ndarray:
    """An RGB PIL image as the (3, image_size, image_size) float32 array the network expects,
    through the evaluation pipeline's own transforms."""
    from mindspore.dataset.transforms import Compose

    from .pipeline import eval_transforms

    pixels = Compose(eval_transforms(preprocessing, image_size))(np.asarray(image, np.uint8))
    return np.ascontiguousarray(pixels, np.float32)


def list_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Files named directly, plus every non-hidden file under named folders (sorted).

    Folders are not filtered by extension: a file that turns out not to be an image is reported
    by the caller and skipped, rather than silently ignored here.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.is_file())
            files.extend(sorted(p for p in found if not _hidden(p.relative_to(path))))
        elif path.exists():
            files.append(path)
        else:
            raise ValueError(f"{path} does not exist; pass image files or folders")
    return files


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
