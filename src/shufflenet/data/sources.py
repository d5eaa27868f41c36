"""Where samples come from: ImageNet-style folders, CIFAR-10 binaries, scikit-learn's digits.

Every source is validated when it is opened, before any training starts, and then serves
`(HWC uint8 RGB image, int32 label)` pairs by index. Images are decoded with Pillow inside the
source: MindSpore 2.10's C++ decoders can kill the process (SIGFPE) on a corrupt JPEG and dump
`abnormal_image.jpg` into the working directory; Pillow raises an exception we can explain.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .images import to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "val": ["test_batch.bin"]}
CIFAR10_RECORD = 1 + 32 * 32 * 3  # label byte + CHW pixels
CIFAR10_RECORDS_PER_FILE = 10_000
#: Fraction of the digits held out for validation (class-stratified, fixed seed).
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
SPLITS = ("train", "val")
DATASETS = ("auto", "imagenet", "cifar10", "digits")
#: Prefix of the message a bad image raises; the engine looks for it in pipeline errors.
BAD_IMAGE = "bad image"
_PLACEHOLDER = np.zeros((1, 1, 3), np.uint8)


class DataError(ValueError):
    """A dataset that cannot be used as it is; the message names the path and the fix."""


@dataclass
class ArraySource:
    """Images already in memory (CIFAR-10, digits)."""

    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    labels: np.ndarray  # (N,) int32
    class_names: list[str]
    kind: str
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        return self.images[index], self.labels[index]


@dataclass
class ImageFileSource:
    """Image files decoded on demand by Pillow (ImageNet-style folders)."""

    files: list[str]
    labels: np.ndarray
    class_names: list[str]
    kind: str = "imagenet"
    skip_bad_images: bool = False
    #: With skip_bad_images: serve the next good image instead of a placeholder, so every
    #: training shard keeps its number of steps (evaluation filters and counts instead).
    substitute_bad_images: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int32]:
        for attempt in range(len(self.files)):
            sample = self._decode((index + attempt) % len(self.files))
            if sample is not None:
                return sample
            if not self.substitute_bad_images:
                return _PLACEHOLDER, np.int32(-1)  # filtered out by the pipeline, then counted
        raise DataError(f"{BAD_IMAGE}: none of the {len(self.files)} images can be decoded")

    def _decode(self, index: int) -> tuple[np.ndarray, np.int32] | None:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                return np.asarray(to_rgb(image)), self.labels[index]
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            if self.skip_bad_images:
                print(f"skipping {path}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                return None
            raise DataError(
                f"{BAD_IMAGE}: {path} cannot be decoded ({type(err).__name__}: {err}); "
                "remove or replace the file, or pass --skip-bad-images to skip such files"
            ) from None


def open_source(
    dataset: str, data_path: str | None, split: str, skip_bad_images: bool = False
) -> ArraySource | ImageFileSource:
    """Open and validate a split of a dataset; `dataset="auto"` infers it from `data_path`."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    kind = infer_kind(data_path) if dataset == "auto" else dataset
    if kind == "digits":
        if data_path is not None:
            raise DataError(f"the bundled digits take no --data-path (got {data_path}); "
                            "pass --dataset auto, imagenet or cifar10 to read it")
        return load_digits(split)
    if data_path is None:
        raise DataError(f"dataset {kind!r} needs --data-path")
    if kind == "cifar10":
        return load_cifar10(data_path, split)
    return load_image_folder(data_path, split, skip_bad_images)


def infer_kind(data_path: str | None) -> str:
    """No path: the bundled digits; CIFAR-10 `.bin` files: cifar10; otherwise image folders."""
    if data_path is None:
        return "digits"
    root = _existing_dir(data_path)
    return "cifar10" if any(root.glob("*.bin")) else "imagenet"


def load_digits(split: str) -> ArraySource:
    """scikit-learn's 1,797 real 8x8 digit scans, split 80/20 per class with a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    grey = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    indices = np.arange(len(grey))
    train_idx, val_idx = train_test_split(
        indices, test_size=DIGITS_VAL_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    chosen = np.sort(train_idx if split == "train" else val_idx)
    images = np.repeat(grey[chosen][..., None], 3, axis=-1)
    return ArraySource(images, digits.target[chosen].astype(np.int32),
                       [str(c) for c in digits.target_names], "digits")


def load_cifar10(data_path: str, split: str) -> ArraySource:
    """The CIFAR-10 binary version; every expected file must be present and complete."""
    root = _existing_dir(data_path)
    expected = CIFAR10_FILES["train"] + CIFAR10_FILES["val"]
    extra = sorted(p.name for p in root.glob("*.bin") if p.name not in expected)
    if extra:
        raise DataError(
            f"CIFAR-10 folder {root} has unexpected batch file(s) {extra}; it must hold exactly "
            f"{', '.join(expected)}. Move the extra files elsewhere"
        )
    size = CIFAR10_RECORD * CIFAR10_RECORDS_PER_FILE
    for name in expected:  # check the whole folder so a broken download is caught at once
        path = root / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {path} is missing; download the binary version again")
        if path.stat().st_size != size:
            raise DataError(
                f"CIFAR-10 file {path} has {path.stat().st_size} bytes, expected {size} "
                f"({CIFAR10_RECORDS_PER_FILE} records); it is truncated or not CIFAR-10, "
                "download it again"
            )
    records = np.concatenate([_cifar10_records(root / name) for name in CIFAR10_FILES[split]])
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ArraySource(np.ascontiguousarray(images), records[:, 0].astype(np.int32),
                       list(CIFAR10_CLASSES), "cifar10")


def _cifar10_records(path: Path) -> np.ndarray:
    """One batch file's records; a label byte outside 0-9 means the file is not CIFAR-10."""
    records = np.fromfile(path, np.uint8).reshape(-1, CIFAR10_RECORD)
    bad = np.flatnonzero(records[:, 0] >= len(CIFAR10_CLASSES))
    if len(bad):
        raise DataError(
            f"CIFAR-10 file {path} has label byte {records[bad[0], 0]} in record {bad[0]} (and "
            f"{len(bad) - 1} more) where 0-9 belong; it is damaged or not CIFAR-10, download it again"
        )
    return records


def load_image_folder(data_path: str, split: str, skip_bad_images: bool = False) -> ImageFileSource:
    """`data_path/{train,val}/<class>/<image>`; classes are the sorted train folders."""
    root = _existing_dir(data_path)
    classes = _class_folders(root / "train")
    folder = root / split
    present = _class_folders(folder)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(f"{folder} has class folder(s) {unknown} that {root / 'train'} lacks")
    files, labels = [], []
    for label, name in enumerate(classes):
        if name not in present:
            continue
        images = sorted(
            str(p) for p in (folder / name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            raise DataError(
                f"class folder {folder / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        files += images
        labels += [label] * len(images)
    return ImageFileSource(files, np.asarray(labels, np.int32), classes, "imagenet", skip_bad_images)


def _existing_dir(data_path: str) -> Path:
    root = Path(data_path).expanduser()
    if not root.exists():
        raise DataError(f"data path {root} does not exist; check --data-path")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder; pass the dataset's folder as --data-path")
    return root


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(
            f"{folder} is missing: an image-folder dataset needs train/ and val/ folders, "
            "each with one sub-folder of images per class"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} has no class folders; put each class's images in its own sub-folder")
    return classes


def explain_pipeline_error(err: BaseException) -> str | None:
    """The bad-image line hidden in a MindSpore pipeline RuntimeError, if that is its cause."""
    found = re.search(rf"{BAD_IMAGE}: [^\n]*", str(err))
    return found.group(0) if found else None


@contextmanager
def explained_pipeline_errors() -> Iterator[None]:
    """Turn a pipeline RuntimeError caused by a bad image into that image's one-line DataError."""
    try:
        yield
    except RuntimeError as err:
        line = explain_pipeline_error(err)
        if line:
            raise DataError(line) from None
        raise
