"""One MindSpore pipeline for every source: order and shard, decode, augment, normalise, batch."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

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
    preprocessing: str
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
    if preprocessing.eval_crop < 1:
        ops = [vision.Resize(eval_resize(image_size, preprocessing)), vision.CenterCrop(image_size)]
    else:
        ops = [vision.Resize((image_size, image_size))]
    return ops + pixel_transforms(preprocessing)


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


def create_dataset(
    source: ArraySource | ImageFileSource,
    training: bool,
    batch_size: int,
    image_size: int | None = None,
    preprocessing: str | None = None,
    num_shards: int = 1,
    shard_id: int = 0,
    epoch: int = 0,
    seed: int = 0,
    num_workers: int = 2,
    augment: bool | None = None,
) -> tuple[ds.Dataset, DatasetInfo]:
    """A batched pipeline over one shard of `source` for one epoch.

    Training shuffles with a permutation drawn from (seed, epoch) and seeds MindSpore's
    augmentation RNG from the same pair, so epoch k reads and augments the same images whether
    the run started at epoch 0 or resumed at k; it drops the last partial batch. Evaluation
    reads every sample of its shard once, in order, keeping the last partial batch.
    `augment=False` trains on the evaluation transforms (default: augment when training).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[source.kind]
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    preprocessing = preprocessing or source.kind  # each dataset has a preset of its own name
    preset = get_preprocessing(preprocessing)
    epoch_seed = seed * 100_003 + epoch
    order = shard_order(len(source), num_shards, shard_id, epoch_seed if training else None)
    if training and len(order) < batch_size:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {len(order)} training samples of this shard; "
            "lower --batch-size"
        )
    ds.config.set_seed(epoch_seed)
    decodes_files = isinstance(source, ImageFileSource)
    if decodes_files and source.skip_bad_images and training:
        source = dataclasses.replace(source, substitute_bad_images=True)
    # MindSpore refuses more workers than CPUs. Arrays are read by one worker: measured on
    # MindSpore 2.10, a GeneratorDataset with two thread workers is ~100x slower than one.
    workers = max(1, min(num_workers, os.cpu_count() or 1))
    readers = workers if decodes_files else 1
    data = ds.GeneratorDataset(
        source, ["image", "label"], sampler=order.tolist(), num_parallel_workers=readers,
        python_multiprocessing=readers > 1,
    )
    if decodes_files and source.skip_bad_images and not training:
        data = data.filter(lambda image, label: label >= 0, ["image", "label"])
    augment = training if augment is None else augment
    data = data.map(build_transforms(source.kind, preset, image_size, augment), "image",
                    num_parallel_workers=workers)
    data = data.batch(batch_size, drop_remainder=training)
    steps = len(order) // batch_size if training else -(-len(order) // batch_size)
    info = DatasetInfo(source.kind, len(order), len(source.class_names), list(source.class_names),
                       image_size, preprocessing, steps)
    return data, info
