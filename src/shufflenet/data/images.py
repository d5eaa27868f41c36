"""Single images to network inputs, for inference outside a dataset pipeline (predict, probes).

Applies the evaluation rule of `presets.py`: resize the shorter side to
`eval_resize(image_size, preset)` and centre-crop `image_size` (or resize straight to a square
when `eval_crop` is 1.0), then order channels and normalise as the preset says.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .presets import Preprocessing, eval_resize


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB; anything PIL cannot decode is a ValueError naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not a readable image ({type(err).__name__}: {err})") from None


def preprocess_image(image: Image.Image, image_size: int, preprocessing: Preprocessing) -> np.ndarray:
    """An RGB PIL image as a (3, image_size, image_size) float32 array the network expects."""
    if preprocessing.eval_crop >= 1.0:
        image = image.resize((image_size, image_size), Image.BILINEAR)
    else:
        short = eval_resize(image_size, preprocessing)
        width, height = image.size
        scale = short / min(width, height)
        size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    pixels = np.asarray(image, dtype=np.float32)
    if preprocessing.bgr:
        pixels = pixels[:, :, ::-1]
    pixels = (pixels - np.asarray(preprocessing.mean, np.float32)) / np.asarray(preprocessing.std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


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
