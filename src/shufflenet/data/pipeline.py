"""One MindSpore pipeline for every source: order and shard, decode, augment, normalise, batch."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

import mindspore.dataset as ds
import numpy as np
from mindspore.dataset import vision

from .presets import Preprocessing, eval_resize, get_preprocessing
from .sources import ArraySource, ImageFileSource

#: Input side each dataset is trained at unless `image_size` says otherwise.
DEFAULT_IMAGE_SIZE = {"imagenet": 224, "cifar10": 32, "digits": 32}


@dataclass(frozen=True)
class DatasetInfo:
    kind: str
    num_samples: int  # samples this shard delivers per epoch (train: padded to equal shards)
    num_classes: int
    class_names: list[str]
    image_size: int
    steps: int  # batches per epoch


def shard_order(
    num_samples: int, num_shards: int = 1, shard_id: int = 0, shuffle_seed: int | None = None
) -> np.ndarray:
    """Indices one shard reads in one epoch.

    With a seed (training) every shard draws the same permutation and takes every
    `num_shards`-th index, wrapping around so all shards run the same number of steps. Without
    one (evaluation) the order is sequential and nothing is padded: shard k reads indices
    k, k + n, k + 2n, ..., so the shards together score every sample exactly once.
    """
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    if shuffle_seed is None:
        return np.arange(shard_id, num_samples, num_shards)
    order = np.random.default_rng(shuffle_seed).permutation(num_samples)
    padded = -(-num_samples // num_shards) * num_shards
    order = np.resize(order, padded)  # np.resize repeats from the start to fill
    return order[shard_id::num_shards]


def eval_transforms(preprocessing: Preprocessing, image_size: int) -> list:
    """Evaluation input: resize and centre-crop as the preset says, then `pixel_transforms`.

    The one definition used by evaluation pipelines and by single images (`predict`), so both
    feed the network the same numbers.
    """
    if preprocessing.eval_crop < 1 and preprocessing.eval_geometry == "megvii":
        ops = [MegviiResizeCrop(eval_resize(image_size, preprocessing), image_size)]
    elif preprocessing.eval_crop < 1:
        ops = [vision.Resize(eval_resize(image_size, preprocessing)), vision.CenterCrop(image_size)]
    else:
        ops = [vision.Resize((image_size, image_size))]
    return ops + pixel_transforms(preprocessing)


class MegviiResizeCrop:
    """Megvii's evaluation geometry, pixel for pixel: `OpencvResize(resize)` then torchvision's
    `CenterCrop(crop)` (ShuffleNet-Series `ShuffleNetV1/train.py`).

    Megvii sizes the longer side int(resize / short * long + 0.5) where MindSpore's `Resize(int)`
    truncates (333x250 -> 341x256, not 340x256), and torchvision centres the crop at
    round((side - crop) / 2) where MindSpore floors. MindSpore's `Resize` to an explicit (h, w)
    is OpenCV's INTER_LINEAR (measured equal on uint8 images), so only the sizes and offsets
    are computed here; OpenCV itself is not needed.
    """

    def __init__(self, resize: int, crop: int) -> None:
        self.resize = resize
        self.crop = crop

    def __call__(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        height, width = megvii_resize_shape(height, width, self.resize)
        image = vision.Resize((height, width), vision.Inter.LINEAR)(image)
        top, left = (int(round((side - self.crop) / 2.0)) for side in (height, width))
        return np.ascontiguousarray(image[top:top + self.crop, left:left + self.crop])


def megvii_resize_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of Megvii's `OpencvResize(size)`, with its exact float expression."""
    if height < width:
        return size, int(size / height * width + 0.5)
    return int(size / width * height + 0.5), size


def pixel_transforms(preprocessing: Preprocessing) -> list:
    """HWC uint8 RGB to normalised CHW float32, in the channel order the preset names."""
    ops = [vision.ConvertColor(vision.ConvertMode.COLOR_RGB2BGR)] if preprocessing.bgr else []
    return ops + [vision.Normalize(list(preprocessing.mean), list(preprocessing.std)), vision.HWC2CHW()]


def build_transforms(kind: str, preprocessing: Preprocessing, image_size: int, training: bool) -> list:
    """The augmentation recipe of each dataset (model zoo for ImageNet, tutorial for CIFAR-10)."""
    if not training:
        return eval_transforms(preprocessing, image_size)
    if kind == "imagenet":
        ops = [vision.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333)),
               vision.RandomHorizontalFlip(),
               vision.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4)]
    elif kind == "cifar10":
        ops = [vision.RandomCrop(32, padding=4), vision.RandomHorizontalFlip()]
        if image_size != 32:
            ops.append(vision.Resize((image_size, image_size)))
    elif kind == "digits":  # no flips: a mirrored digit is another glyph
        ops = [vision.Resize((image_size, image_size)),
               vision.RandomCrop(image_size, padding=max(1, image_size // 8))]
    else:
        raise ValueError(f"no transforms for dataset kind {kind!r}")
    return ops + pixel_transforms(preprocessing)


@dataclass(frozen=True)
class PipelineSpec:
    """How one split is read: everything but the epoch, so steps are known before any pipeline.

    `image_size` None: the dataset's default; `preprocessing` None: the dataset's own preset;
    `augment` None: augment when training.
    """

    training: bool
    batch_size: int
    image_size: Optional[int] = None
    preprocessing: Optional[Preprocessing] = None
    num_shards: int = 1
    shard_id: int = 0
    seed: int = 0
    num_workers: int = 2
    augment: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.image_size is not None and self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")

    def resolved(self, kind: str) -> PipelineSpec:
        """This spec with the dataset kind's defaults filled in."""
        return dataclasses.replace(
            self, image_size=self.image_size or DEFAULT_IMAGE_SIZE[kind],
            preprocessing=self.preprocessing or get_preprocessing(kind),
            augment=self.training if self.augment is None else self.augment)

    def shard_size(self, num_samples: int) -> int:
        """Samples one shard reads per epoch (training pads shards to equal length)."""
        if self.training:
            return -(-num_samples // self.num_shards)
        return len(range(self.shard_id, num_samples, self.num_shards))

    def steps(self, num_samples: int) -> int:
        """Batches per epoch: full batches when training, every sample when evaluating."""
        size = self.shard_size(num_samples)
        return size // self.batch_size if self.training else -(-size // self.batch_size)


def create_dataset(
    source: ArraySource | ImageFileSource, spec: PipelineSpec, epoch: int = 0
) -> tuple[ds.Dataset, DatasetInfo]:
    """A batched pipeline over one shard of `source` for one epoch.

    Training shuffles with a permutation drawn from (seed, epoch) and seeds MindSpore's
    augmentation RNG from the same pair, so epoch k reads and augments the same images whether
    the run started at epoch 0 or resumed at k; it drops the last partial batch. Evaluation
    reads every sample of its shard once, in order, keeping the last partial batch.
    """
    spec = spec.resolved(source.kind)
    epoch_seed = spec.seed * 100_003 + epoch
    order = shard_order(len(source), spec.num_shards, spec.shard_id, epoch_seed if spec.training else None)
    if spec.training and len(order) < spec.batch_size:
        raise ValueError(
            f"batch_size {spec.batch_size} exceeds the {len(order)} training samples of this shard; "
            "lower --batch-size"
        )
    ds.config.set_seed(epoch_seed)
    decodes_files = isinstance(source, ImageFileSource)
    if decodes_files and source.skip_bad_images and spec.training:
        source = dataclasses.replace(source, substitute_bad_images=True)
    # MindSpore refuses more workers than CPUs. Arrays are read by one worker: measured on
    # MindSpore 2.10, a GeneratorDataset with two thread workers is ~100x slower than one.
    workers = max(1, min(spec.num_workers, os.cpu_count() or 1))
    readers = workers if decodes_files else 1
    data = ds.GeneratorDataset(
        source, ["image", "label"], sampler=order.tolist(), num_parallel_workers=readers,
        python_multiprocessing=readers > 1,
    )
    if decodes_files and source.skip_bad_images and not spec.training:
        data = data.filter(lambda image, label: label >= 0, ["image", "label"])
    transforms = build_transforms(source.kind, spec.preprocessing, spec.image_size, spec.augment)
    data = data.map(transforms, "image", num_parallel_workers=workers)
    data = data.batch(spec.batch_size, drop_remainder=spec.training)
    info = DatasetInfo(source.kind, len(order), len(source.class_names), list(source.class_names),
                       spec.image_size, spec.steps(len(source)))
    return data, info
