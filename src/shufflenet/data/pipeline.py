"""One MindSpore pipeline for every source: order and shard, decode, augment, normalise, batch."""
from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import mindspore.dataset as ds
import numpy as np
from mindspore.dataset import vision
from mindspore.dataset.transforms import Compose
from PIL import Image

from .augment import (
    BatchMixer,
    auto_augment_op,
    parse_auto_augment,
    random_erasing_op,
    repeated_aug_order,
)
from .presets import Preprocessing, eval_resize, get_preprocessing
from .sources import ArraySource, ImageFileSource

#: Input side each dataset is trained at unless `image_size` says otherwise.
DATASET_IMAGE_SIZES = {"imagenet": 224, "cifar10": 32, "digits": 32}


@dataclass(frozen=True)
class DatasetInfo:
    kind: str
    num_samples: int  # samples this shard delivers per epoch (train: padded to equal shards)
    num_classes: int
    class_names: list[str]
    image_size: int
    steps: int  # batches per epoch
    #: The augmentation seed of this shard and epoch: iterate inside `seeded(info.seed)`.
    seed: int = 0


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """MindSpore's dataset seed (and Python's and numpy's global generators, which
    `ds.config.set_seed` seeds too) set to `seed` for the block, then the caller's again.

    MindSpore's C++ augmentations read the seed when an iterator (or data sink) is created, and
    `vision.RandomErasing` draws from Python's `random` while it iterates, so a pipeline is
    iterated inside this block (with `DatasetInfo.seed`) to reproduce its epoch. The caller
    applies it: `create_dataset` changes no process-wide state.
    """
    previous, python_state, numpy_state = ds.config.get_seed(), random.getstate(), np.random.get_state()
    ds.config.set_seed(seed)
    try:
        yield
    finally:
        ds.config.set_seed(previous)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


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


def preprocess_image(image: Image.Image, image_size: int, preprocessing: Preprocessing) -> np.ndarray:
    """An RGB PIL image as the (3, image_size, image_size) float32 array the network expects,
    through the evaluation pipeline's own transforms (so `predict` sees a dataset batch's numbers)."""
    pixels = Compose(eval_transforms(preprocessing, image_size))(np.asarray(image, np.uint8))
    return np.ascontiguousarray(pixels, np.float32)


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


def build_transforms(
    kind: str, preprocessing: Preprocessing, image_size: int, training: bool,
    auto_augment: Optional[str] = None, re_prob: float = 0.0,
) -> list:
    """The augmentation recipe of each dataset (model zoo for ImageNet, tutorial for CIFAR-10).

    In mindcv's (and timm's) order: geometric crop/flip, then `auto_augment` on HWC uint8 (which
    replaces ImageNet's colour jitter, as in mindcv), normalise, HWC2CHW, then random erasing
    with probability `re_prob` on the normalised CHW image.
    """
    if not training:
        return eval_transforms(preprocessing, image_size)
    if kind == "imagenet":
        ops = [vision.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333)),
               vision.RandomHorizontalFlip()]
        if auto_augment is None:
            ops.append(vision.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4))
    elif kind == "cifar10":
        ops = [vision.RandomCrop(32, padding=4), vision.RandomHorizontalFlip()]
        if image_size != 32:
            ops.append(vision.Resize((image_size, image_size)))
    elif kind == "digits":  # no flips: a mirrored digit is another glyph
        ops = [vision.Resize((image_size, image_size)),
               vision.RandomCrop(image_size, padding=max(1, image_size // 8))]
    else:
        raise ValueError(f"no transforms for dataset kind {kind!r}")
    if auto_augment is not None:
        ops.append(auto_augment_op(auto_augment, preprocessing))
    ops += pixel_transforms(preprocessing)
    return (ops + [random_erasing_op(re_prob)]) if re_prob > 0 else ops


@dataclass(frozen=True)
class PipelineSpec:
    """How one split is read: everything but the epoch, so steps are known before any pipeline.

    `image_size` None: the dataset's default; `preprocessing` None: the dataset's own preset;
    `augment` None: augment when training.

    Augmentations (all off by default), for the training split only:

    - `auto_augment`: "randaug" (timm's m9 n2; "randaug-m<0..10>-n<ops>" strings accepted),
      "autoaug" (ImageNet policy) or "trivialaugwide", after crop/flip; replaces ImageNet's
      colour jitter. `re_prob`: random erasing probability (to the mean colour, as mindcv).
      Both apply only when `augment` is on.
    - `mixup` / `cutmix`: Beta alphas of timm's batch mixing; with probability `cutmix_prob` a
      batch is mixed, by cutmix with probability `mixup_switch_prob` when both alphas are on.
      Mixing follows `training`, not `augment` (it is a loss-side regulariser): with it on,
      every training batch's label column is float32 [B, num_classes] soft targets, smoothed
      by `label_smoothing`. Without mixing, `label_smoothing` does nothing here (labels stay
      int32 class indices): smooth in the loss then, as timm does.
    - `aug_repeats` > 1: repeated augmentation (mindcv's RepeatAugSampler); the epoch length
      per shard, and so `steps()`, is unchanged. Follows `training`.
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
    auto_augment: Optional[str] = None
    re_prob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    cutmix_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    num_classes: int = 0
    aug_repeats: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.image_size is not None and self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        if self.auto_augment is not None:
            parse_auto_augment(self.auto_augment)
        for name in ("re_prob", "cutmix_prob", "mixup_switch_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("mixup", "cutmix", "aug_repeats", "num_classes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.aug_repeats != int(self.aug_repeats):
            raise ValueError(f"aug_repeats must be an integer (0 or 1: off), got {self.aug_repeats}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixing and self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 when mixup or cutmix is on, got {self.num_classes}")

    @property
    def mixing(self) -> bool:
        """Whether mixup or cutmix is configured (applied to training batches only)."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def soft_targets(self) -> bool:
        """Whether this split's label column is float32 [B, num_classes] rather than int32 [B]."""
        return self.training and self.mixing

    def resolved(self, kind: str) -> PipelineSpec:
        """This spec with the dataset kind's defaults filled in."""
        return dataclasses.replace(
            self, image_size=self.image_size or DATASET_IMAGE_SIZES[kind],
            preprocessing=self.preprocessing or get_preprocessing(kind),
            augment=self.training if self.augment is None else self.augment)

    def shard_size(self, num_samples: int) -> int:
        """Samples one shard reads per epoch (training pads shards to equal length).

        Repeated augmentation keeps this length: mindcv's sampler selects ceil(N / shards) of
        the N * aug_repeats repeated indices per shard.
        """
        if self.training:
            return -(-num_samples // self.num_shards)
        return len(range(self.shard_id, num_samples, self.num_shards))

    def steps(self, num_samples: int) -> int:
        """Batches per epoch: full batches when training, every sample when evaluating."""
        size = self.shard_size(num_samples)
        return size // self.batch_size if self.training else -(-size // self.batch_size)

    def order(self, num_samples: int, epoch_seed: int) -> np.ndarray:
        """Indices this shard reads in the epoch whose seed is `epoch_seed`."""
        if not self.training:
            return shard_order(num_samples, self.num_shards, self.shard_id)
        if self.aug_repeats > 1:
            return repeated_aug_order(num_samples, self.aug_repeats, self.num_shards, self.shard_id,
                                      epoch_seed)
        return shard_order(num_samples, self.num_shards, self.shard_id, epoch_seed)


def create_dataset(
    source: ArraySource | ImageFileSource, spec: PipelineSpec, epoch: int = 0
) -> tuple[ds.Dataset, DatasetInfo]:
    """A batched pipeline over one shard of `source` for one epoch.

    Training shuffles with a permutation drawn from (seed, epoch) and derives the augmentation
    seed (`DatasetInfo.seed`) from the same pair, so epoch k reads and augments the same images
    whether the run started at epoch 0 or resumed at k, when iterated inside `seeded(info.seed)`;
    it drops the last partial batch. Evaluation reads every sample of its shard once, in order,
    keeping the last partial batch. With mixup/cutmix the training labels are soft targets (see
    `PipelineSpec`). No process-wide state is changed.
    """
    spec = spec.resolved(source.kind)
    epoch_seed = spec.seed * 100_003 + epoch
    order = spec.order(len(source), epoch_seed)
    if spec.training and len(order) < spec.batch_size:
        raise ValueError(
            f"batch_size {spec.batch_size} exceeds the {len(order)} training samples of this shard; "
            "lower --batch-size"
        )
    if spec.soft_targets and spec.num_classes < len(source.class_names):
        raise ValueError(f"num_classes {spec.num_classes} is less than the dataset's "
                         f"{len(source.class_names)} classes")
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
    augments = spec.augment and spec.training
    transforms = build_transforms(source.kind, spec.preprocessing, spec.image_size, spec.augment,
                                  spec.auto_augment if augments else None, spec.re_prob if augments else 0.0)
    data = data.map(transforms, "image", num_parallel_workers=workers)
    data = batched(data, spec, epoch_seed)
    info = DatasetInfo(source.kind, len(order), len(source.class_names), list(source.class_names),
                       spec.image_size, spec.steps(len(source)), augmentation_seed(spec, epoch_seed))
    return data, info


def augmentation_seed(spec: PipelineSpec, epoch_seed: int) -> int:
    """MindSpore's augmentation seed: (seed, epoch), and the shard when samples are repeated.

    Every shard otherwise shares one augmentation stream; with repeated augmentation the copies
    of a sample sit at the same position on different shards and would get identical crops.
    """
    if not (spec.training and spec.aug_repeats > 1 and spec.shard_id):
        return epoch_seed
    return int(np.random.SeedSequence([epoch_seed % 2**63, spec.shard_id]).generate_state(1)[0])


def batched(data: ds.Dataset, spec: PipelineSpec, epoch_seed: int) -> ds.Dataset:
    """Batch, mixing training batches (mixup/cutmix) into soft targets when the spec asks."""
    if not spec.soft_targets:
        return data.batch(spec.batch_size, drop_remainder=spec.training)
    mixer = BatchMixer(spec.mixup, spec.cutmix, spec.cutmix_prob, spec.mixup_switch_prob,
                       spec.label_smoothing, spec.num_classes, (epoch_seed % 2**63, spec.shard_id))
    return data.batch(spec.batch_size, drop_remainder=True, per_batch_map=mixer,
                      input_columns=["image", "label"])
