"""Single image files to RGB pictures, for inference outside a dataset pipeline (predict) and
for the dataset sources: safe decoding, wide modes scaled, folders listed.

Turning a picture into network input is `pipeline.preprocess_image`, beside the evaluation
transforms it applies (this module sits below the pipeline and imports none of it).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Pillow modes of more than 8 bits per sample, whose `convert("RGB")` clips instead of scaling.
WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I": 65535, "F": 1.0}
#: Most pixels an image may have to be decoded: 8192 x 8192 (64 Mpixel, 192 MB as 8-bit RGB,
#: per worker). Pillow only warns from 89 Mpixel and refuses from 179; camera photos (12-50
#: Mpixel) and ImageNet's images (about 0.2 Mpixel on average) fit well below.
MAX_PIXELS = 8192 * 8192


def check_pixels(image: Image.Image) -> None:
    """Refuse, from the header alone (Pillow decodes lazily), an image too large to decode:
    a small file can declare 20000 x 20000 pixels and take gigabytes once decoded."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        where = getattr(image, "filename", "") or "an image"
        raise too_large(where, f"{width}x{height} = {width * height:,}")


def too_large(path: str | os.PathLike, pixels: str) -> ValueError:
    return ValueError(f"{path} has {pixels} pixels, more than the {MAX_PIXELS:,} (64 Mpixel) decoded "
                      "here; it may be a decompression bomb, else downscale it")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, with 16-bit and float greyscale scaled to 0..255 rather than clipped; the
    pixel count is checked before anything is decoded (float32: no float64 copy of a large image)."""
    check_pixels(image)
    if image.mode in WIDE_MODES:
        values = np.array(image, np.float32)  # a writable copy, scaled in place
        values *= np.float32(255.0 / WIDE_MODES[image.mode])
        np.clip(np.rint(values, out=values), 0, 255, out=values)
        image = Image.fromarray(values.astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB; anything PIL cannot decode, or too large to decode safely, is
    a ValueError naming the file.

    Pillow checks the size in `Image.open`, before `to_rgb` can: it warns from 89 Mpixel and
    refuses from 179. Its DecompressionBombWarning is an error here, for this call only (no
    global setting is changed, at import or after), so both end as this ValueError.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return to_rgb(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        count = re.search(r"\((\d+) pixels\)", str(err))  # "Image size (N pixels) exceeds ..."
        raise too_large(path, f"{int(count.group(1)):,}" if count else "too many") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not a readable image ({type(err).__name__}: {err})") from None


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
