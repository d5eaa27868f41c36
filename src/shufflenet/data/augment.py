"""Training augmentations users of timm and mindcv expect: auto-augment policies, random
erasing, mixup/cutmix with soft targets, and repeated augmentation.

Image-level ops are MindSpore's own (`vision.RandAugment`, `AutoAugment`, `TrivialAugmentWide`,
`RandomErasing`), seeded by the pipeline; batch mixing and the repeated-augmentation order are
numpy, seeded from (seed, epoch, shard[, batch]) so a resumed epoch reproduces exactly.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from mindspore.dataset import vision

from .presets import Preprocessing

AUTO_AUGMENT_POLICIES = ("randaug", "autoaug", "trivialaugwide")
#: Options each policy's spec string may carry (timm's "randaug-m9-n2-mstd0.5-inc1" grammar).
_POLICY_OPTIONS = {"randaug": ("m", "n", "mstd", "inc"), "autoaug": ("mstd",), "trivialaugwide": ()}
#: timm's RandAugment magnitude scale: m in 0..10 means m/10 of each op's maximum, which is
#: MindSpore's (torchvision's) RandAugment with 11 magnitude bins.
RANDAUG_MAGNITUDE_BINS = 11
#: timm's and mindcv's RandomErasing area and aspect ranges.
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)


def parse_auto_augment(spec: str) -> tuple[str, dict[str, float]]:
    """(policy, options) of a timm/mindcv auto-augment string, raising ValueError naming the field.

    "randaug" defaults to m9 n2 (timm's and mindcv's), and "m"/"n" set magnitude and op count.
    MindSpore's policies have no magnitude noise or ramp, so "mstd" and "inc" are accepted (mindcv
    configs carry them) but have no effect; a warning says so.
    """
    name, *parts = spec.split("-")
    if name not in AUTO_AUGMENT_POLICIES:
        raise ValueError(f"auto_augment must start with one of {', '.join(AUTO_AUGMENT_POLICIES)}, "
                         f"got {spec!r}")
    options: dict[str, float] = {"m": 9, "n": 2} if name == "randaug" else {}
    for part in parts:
        match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", part)
        if not match or match.group(1) not in _POLICY_OPTIONS[name]:
            raise ValueError(f"auto_augment option {part!r} is not understood for {name!r} "
                             f"(valid: {', '.join(_POLICY_OPTIONS[name]) or 'none'})")
        options[match.group(1)] = float(match.group(2))
    if name == "randaug" and not (0 <= options["m"] <= 10 and options["m"] == int(options["m"])):
        raise ValueError(f"auto_augment randaug magnitude m must be an integer in [0, 10], got {spec!r}")
    if name == "randaug" and not (options["n"] >= 1 and options["n"] == int(options["n"])):
        raise ValueError(f"auto_augment randaug op count n must be a positive integer, got {spec!r}")
    if options.get("mstd") or options.get("inc"):
        warnings.warn(f"auto_augment {spec!r}: MindSpore's {name} has a fixed magnitude; "
                      "mstd/inc are ignored", UserWarning, stacklevel=1)
    return name, options


def fill_colour(preprocessing: Preprocessing) -> tuple[int, int, int]:
    """RGB colour of pixels uncovered by geometric ops: the dataset mean, as timm and mindcv use."""
    mean = preprocessing.mean[::-1] if preprocessing.bgr else preprocessing.mean
    return tuple(min(255, round(value)) for value in mean)


def auto_augment_op(spec: str, preprocessing: Preprocessing) -> Any:
    """MindSpore's op for an auto-augment string, on HWC uint8 RGB, bilinear like mindcv's.

    "autoaug" is the ImageNet policy of AutoAugment (torchvision's "original"), not timm's "v0".
    """
    name, options = parse_auto_augment(spec)
    common = {"interpolation": vision.Inter.BILINEAR, "fill_value": fill_colour(preprocessing)}
    if name == "randaug":
        return vision.RandAugment(num_ops=int(options["n"]), magnitude=int(options["m"]),
                                  num_magnitude_bins=RANDAUG_MAGNITUDE_BINS, **common)
    if name == "autoaug":
        return vision.AutoAugment(vision.AutoAugmentPolicy.IMAGENET, **common)
    return vision.TrivialAugmentWide(**common)


def random_erasing_op(prob: float) -> Any:
    """Random erasing on normalised CHW float32, as mindcv's ImageNet recipe applies it.

    mindcv uses MindSpore's `vision.RandomErasing` with `value=re_value` (default 0): the erased
    box is set to 0 after normalisation, i.e. to the dataset mean colour. timm's training script
    defaults to per-pixel normal noise instead; we follow mindcv.
    """
    return vision.RandomErasing(prob=prob, scale=ERASE_SCALE, ratio=ERASE_RATIO, value=0, max_attempts=10)


def repeated_aug_order(
    num_samples: int, repeats: int, num_shards: int, shard_id: int, shuffle_seed: int
) -> np.ndarray:
    """Indices one shard reads in one epoch with repeated augmentation (mindcv's RepeatAugSampler).

    Each index of a permutation is repeated `repeats` times in a row, padded from the start to a
    multiple of `num_shards`, and dealt round-robin, so the copies of a sample land on different
    shards. Each shard keeps its first ceil(num_samples / num_shards) indices: the length mindcv's
    `create_dataset` selects (`selected_round=0`), the same as without repeats. An epoch thus sees
    about num_samples / repeats distinct samples, each `repeats` times (DeiT's scheme).
    """
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    order = np.repeat(np.random.default_rng(shuffle_seed).permutation(num_samples), repeats)
    order = np.resize(order, math.ceil(num_samples * repeats / num_shards) * num_shards)
    return order[shard_id::num_shards][:math.ceil(num_samples / num_shards)]


def smoothed_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """timm's label-smoothed one-hot rows: off = smoothing / C, on = 1 - smoothing + off."""
    off = smoothing / num_classes
    targets = np.full((len(labels), num_classes), off, np.float32)
    targets[np.arange(len(labels)), labels.astype(np.int64)] = 1.0 - smoothing + off
    return targets


def mix_targets(labels: np.ndarray, num_classes: int, lam: float, smoothing: float) -> np.ndarray:
    """lam * onehot(y) + (1 - lam) * onehot(y reversed), smoothed: timm's `mixup_target`."""
    own = smoothed_one_hot(labels, num_classes, smoothing)
    return (lam * own + (1.0 - lam) * own[::-1]).astype(np.float32)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """timm's `rand_bbox`: a box of side sqrt(1 - lam) times the image's, centred uniformly and
    clipped to the image (so the pasted area, not lam, sets the targets)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


@dataclass(frozen=True)
class BatchMixer:
    """timm's `Mixup` in 'batch' mode, as a `batch(per_batch_map=...)` callable.

    Each batch draws from its own generator keyed by (entropy, batch number), so batches do
    not depend on the order MindSpore calls this in, and a restarted epoch repeats them. Every
    batch, mixed or not, leaves with float32 [B, num_classes] soft targets.
    """

    mixup_alpha: float
    cutmix_alpha: float
    prob: float
    switch_prob: float
    smoothing: float
    num_classes: int
    entropy: tuple[int, ...]  # (seed, epoch, shard)

    def __call__(self, images: list, labels: list, batch_info: Any) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([*self.entropy, batch_info.get_batch_num()])
        return self.mix(np.stack(images).astype(np.float32), np.stack(labels).reshape(-1), rng)

    def mix(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
        """(mixed NCHW images, soft targets) of one batch; the partner of row i is row B-1-i."""
        lam, use_cutmix = self.draw(rng)
        if lam < 1.0 and use_cutmix:
            height, width = images.shape[-2:]
            top, bottom, left, right = cutmix_box(height, width, lam, rng)
            images[..., top:bottom, left:right] = images[::-1, ..., top:bottom, left:right].copy()
            lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        elif lam < 1.0:
            images = (lam * images + (1.0 - lam) * images[::-1]).astype(np.float32)
        return images, mix_targets(labels, self.num_classes, lam, self.smoothing)

    def draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(lam, cutmix?) as timm's `_params_per_batch`: lam 1 means this batch is not mixed."""
        if rng.random() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix
