"""Training augmentations: auto-augment, random erasing, mixup/cutmix soft targets, repeated
augmentation. Each test checks the effect on the numbers, not only that the pipeline runs."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import batches

from shufflenet.data import PipelineSpec, create_dataset, parse_auto_augment, repeated_aug_order
from shufflenet.data.augment import BatchMixer, smoothed_one_hot
from shufflenet.data.sources import ArraySource

SMOOTHING = 0.1


def constant_source(num: int = 64) -> ArraySource:
    """Sample i is a flat image of grey level 4 * i and class i, so pixels and labels name it."""
    levels = (np.arange(num) * 4).astype(np.uint8)
    images = np.broadcast_to(levels[:, None, None, None], (num, 32, 32, 3)).copy()
    return ArraySource(images, np.arange(num, dtype=np.int32), [str(i) for i in range(num)], "cifar10")


def random_source(num: int = 32, classes: int = 10) -> ArraySource:
    images = np.random.default_rng(0).integers(0, 256, (num, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(num) % classes).astype(np.int32)
    return ArraySource(images, labels, [str(i) for i in range(classes)], "cifar10")


def mixed_and_plain(source: ArraySource, epoch: int = 0, shard: int = 0, **mixing) -> list[tuple]:
    """(mixed images, soft targets, plain images, plain labels) per batch, at one seed.

    `augment=False`: the constant images pass the pipeline unchanged, so only mixing moves them.
    """
    common = {"augment": False, "seed": 5, "num_shards": 2, "shard_id": shard}
    spec = PipelineSpec(True, 8, num_classes=len(source), **common, **mixing)
    plain = batches(create_dataset(source, PipelineSpec(True, 8, **common), epoch))
    mixed = batches(create_dataset(source, spec, epoch))
    return [(x, y, px, py) for (x, y), (px, py) in zip(mixed, plain)]


def expected_targets(labels: np.ndarray, classes: int, lam: np.ndarray) -> np.ndarray:
    own = smoothed_one_hot(labels, classes, SMOOTHING)
    return lam[:, None] * own + (1 - lam[:, None]) * own[::-1]


def test_mixup_blends_with_the_reversed_batch_and_targets_carry_lam():
    source = constant_source()
    mixed_batches = 0
    for images, targets, plain, labels in mixed_and_plain(source, mixup=1.0, label_smoothing=SMOOTHING):
        assert targets.dtype == np.float32 and targets.shape == (8, 64)
        np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-5)
        own, partner = plain[:, 0, 0, 0], plain[::-1, 0, 0, 0]
        lam = (images[:, 0, 0, 0] - partner) / (own - partner)  # rows 0..7 pair with 7..0: all differ
        assert np.allclose(lam, lam[0], atol=1e-4)  # one lam per batch ('batch' mode)
        np.testing.assert_allclose(images, lam[0] * plain + (1 - lam[0]) * plain[::-1], atol=1e-4)
        np.testing.assert_allclose(targets, expected_targets(labels, 64, lam), atol=1e-4)
        mixed_batches += not np.isclose(lam[0], 1.0)
    assert mixed_batches == 4  # cutmix_prob (the mixing probability) defaults to 1


def mixup_lams(epoch: int, shard: int) -> list[float]:
    """The lam of each batch, read back from the blended pixels of flat images."""
    return [float((x[0, 0, 0, 0] - px[-1, 0, 0, 0]) / (px[0, 0, 0, 0] - px[-1, 0, 0, 0]))
            for x, _, px, _ in mixed_and_plain(constant_source(64), epoch, shard, mixup=1.0)]


def test_mixing_draws_depend_on_seed_epoch_shard_and_batch_only():
    lams = mixup_lams(3, 0)
    assert len(lams) == 4 and len(set(np.round(lams, 4))) == 4  # a fresh lam per batch
    np.testing.assert_allclose(mixup_lams(3, 0), lams, atol=1e-6)  # a resumed epoch repeats them
    assert not np.allclose(mixup_lams(4, 0), lams, atol=1e-3)
    assert not np.allclose(mixup_lams(3, 1), lams, atol=1e-3)


def test_cutmix_pastes_one_box_whose_area_is_one_minus_lam():
    source = constant_source()
    for images, targets, plain, labels in mixed_and_plain(source, cutmix=1.0, label_smoothing=SMOOTHING):
        pasted = images[:, 0] == plain[::-1, 0]  # (B, H, W): pixels taken from the partner
        assert (pasted | (images[:, 0] == plain[:, 0])).all()  # nothing else changed
        assert (pasted == pasted[0]).all()  # the same box in every row
        rows, cols = np.nonzero(pasted[0])
        if len(rows):
            assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a filled rectangle
        lam = 1.0 - pasted.mean(axis=(1, 2))
        np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(targets, expected_targets(labels, 64, lam), atol=1e-5)


@pytest.mark.parametrize("switch_prob,cutmix_batches", [(1.0, 4), (0.0, 0)])
def test_switch_prob_chooses_between_cutmix_and_mixup(switch_prob, cutmix_batches):
    source = constant_source()
    found = 0
    for images, *_ in mixed_and_plain(source, mixup=1.0, cutmix=1.0, mixup_switch_prob=switch_prob):
        values = {len(np.unique(row)) for row in images[:, 0]}
        assert values in ({1}, {2})  # mixup: one blended level per image; cutmix: two levels
        found += values == {2}
    assert found == cutmix_batches


def test_label_smoothing_alone_leaves_labels_to_the_loss():
    spec = PipelineSpec(True, 8, label_smoothing=0.1, num_classes=10)
    labels = batches(create_dataset(random_source(), spec))[0][1]
    assert not spec.soft_targets and labels.dtype == np.int32 and labels.shape == (8,)


def test_unmixed_batches_still_get_smoothed_soft_targets():
    source = constant_source()
    for images, targets, plain, labels in mixed_and_plain(source, mixup=1.0, cutmix_prob=0.0,
                                                          label_smoothing=SMOOTHING):
        np.testing.assert_array_equal(images, plain)
        np.testing.assert_allclose(targets, smoothed_one_hot(labels, 64, SMOOTHING))
        assert targets.max() == pytest.approx(1 - SMOOTHING + SMOOTHING / 64)


def test_mixing_is_reproducible_per_seed_and_epoch_and_skipped_in_evaluation():
    source = random_source()
    spec = PipelineSpec(True, 8, seed=2, mixup=0.8, cutmix=1.0, num_classes=10, label_smoothing=0.1)

    def epoch(number: int) -> list:
        return batches(create_dataset(source, spec, number))

    first, again, other = epoch(3), epoch(3), epoch(4)
    for (x, y), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(first[0][1], other[0][1])
    labels = batches(create_dataset(source, PipelineSpec(False, 8, mixup=0.8, num_classes=10)))[0][1]
    assert labels.dtype == np.int32 and labels.shape == (8,)


def test_batch_mixer_lam_follows_beta_and_box_area_corrects_it():
    mixer = BatchMixer(0.0, 1.0, 1.0, 0.5, 0.0, 4, (0, 0))
    rng = np.random.default_rng(0)
    images = np.stack([np.full((1, 20, 30), float(i), np.float32) for i in range(4)])
    out, targets = mixer.mix(images.copy(), np.arange(4), rng)
    lam = 1.0 - (out[0, 0] == 3.0).mean()
    np.testing.assert_allclose(targets[0], [lam, 0, 0, 1 - lam], atol=1e-6)
    mixup = BatchMixer(0.4, 0.0, 1.0, 0.5, 0.0, 2, (0, 0))
    lams = [mixup.draw(np.random.default_rng(seed))[0] for seed in range(400)]
    assert abs(np.mean(lams) - 0.5) < 0.05 and np.mean(np.abs(np.array(lams) - 0.5) > 0.4) > 0.3  # U-shaped


@pytest.mark.parametrize("shards,repeats,num", [(1, 2, 24), (2, 2, 24), (2, 3, 24), (2, 3, 25)])
def test_repeated_augmentation_spreads_copies_across_shards(shards, repeats, num):
    source = constant_source(num)
    seen = []
    for shard in range(shards):
        spec = PipelineSpec(True, 4, num_shards=shards, shard_id=shard, seed=1, aug_repeats=repeats)
        dataset, info = create_dataset(source, spec, epoch=2)
        labels = [y for _, y in batches(dataset)]
        assert len(labels) == info.steps == spec.steps(num) == -(-num // shards) // 4
        assert info.num_samples == -(-num // shards)
        seen.append(repeated_aug_order(num, repeats, shards, shard, 1 * 100_003 + 2))
        np.testing.assert_array_equal(np.concatenate(labels), seen[-1][:len(labels) * 4])
    counts = Counter(np.concatenate(seen).tolist())
    full = [index for index, count in counts.items() if count == repeats]
    assert len(full) >= len(counts) - 1 and max(counts.values()) == repeats  # only the last is cut
    if num % (shards * repeats) == 0:
        assert len(counts) == num // repeats
    if shards == repeats:  # each shard holds exactly one copy of every sample
        assert all(len(set(s.tolist())) == len(s) for s in seen)


def test_repeated_copies_on_two_shards_are_augmented_differently():
    source = random_source(16)
    images = []
    for shard in range(2):
        spec = PipelineSpec(True, 8, num_shards=2, shard_id=shard, seed=4, aug_repeats=2)
        images.append(batches(create_dataset(source, spec))[0][0])
    order = [repeated_aug_order(16, 2, 2, k, 4 * 100_003) for k in range(2)]
    np.testing.assert_array_equal(order[0], order[1])  # the same samples, position for position
    assert sum(not np.array_equal(a, b) for a, b in zip(*images)) >= 6


def test_repeats_of_zero_and_one_read_the_plain_order():
    source = random_source(20)
    plain = batches(create_dataset(source, PipelineSpec(True, 4, seed=3)))
    for repeats in (0, 1):
        again = batches(create_dataset(source, PipelineSpec(True, 4, seed=3, aug_repeats=repeats)))
        for (x, y), (x2, y2) in zip(plain, again):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)


def test_random_erasing_sets_boxes_to_the_mean_only_when_asked():
    source = random_source()

    def first_images(re_prob: float, augment: bool = True) -> np.ndarray:
        spec = PipelineSpec(True, 16, seed=6, re_prob=re_prob, augment=augment)
        return batches(create_dataset(source, spec))[0][0]

    base, erased = first_images(0.0), first_images(1.0)
    np.testing.assert_array_equal(first_images(0.0), base)
    changed = base != erased
    assert changed.any(axis=(1, 2, 3)).sum() >= 12  # nearly every image got a box
    assert (erased[changed] == 0).all()  # erased to 0 after normalising: the mean colour
    np.testing.assert_array_equal(first_images(1.0, augment=False), first_images(0.0, augment=False))


@pytest.mark.parametrize("policy", ["randaug", "autoaug", "trivialaugwide", "randaug-m9-n3"])
def test_auto_augment_policies_change_the_images(policy):
    source = random_source()

    def first_images(auto_augment) -> np.ndarray:
        spec = PipelineSpec(True, 16, seed=8, auto_augment=auto_augment)
        return batches(create_dataset(source, spec))[0][0]

    base, augmented = first_images(None), first_images(policy)
    assert augmented.shape == base.shape and augmented.dtype == np.float32
    assert sum(not np.array_equal(a, b) for a, b in zip(base, augmented)) >= 8
    np.testing.assert_array_equal(first_images(policy), augmented)  # seeded


def test_auto_augment_strings_parse_like_timm():
    assert parse_auto_augment("randaug") == ("randaug", {"m": 9, "n": 2})
    assert parse_auto_augment("randaug-m7-n3") == ("randaug", {"m": 7.0, "n": 3.0})
    with pytest.warns(UserWarning, match="mstd/inc are ignored"):
        assert parse_auto_augment("randaug-m9-mstd0.5-inc1")[1]["m"] == 9
    assert parse_auto_augment("trivialaugwide") == ("trivialaugwide", {})


@pytest.mark.parametrize("fields,name", [
    ({"auto_augment": "augmix"}, "auto_augment"),
    ({"auto_augment": "randaug-m12"}, "auto_augment"),
    ({"auto_augment": "trivialaugwide-m3"}, "auto_augment"),
    ({"re_prob": 1.5}, "re_prob"),
    ({"re_prob": -0.1}, "re_prob"),
    ({"mixup": -1.0}, "mixup"),
    ({"cutmix": -0.5}, "cutmix"),
    ({"cutmix_prob": 2.0, "mixup": 1.0, "num_classes": 10}, "cutmix_prob"),
    ({"mixup_switch_prob": -0.2}, "mixup_switch_prob"),
    ({"label_smoothing": 1.0, "mixup": 1.0, "num_classes": 10}, "label_smoothing"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
    ({"mixup": 0.8}, "num_classes"),
    ({"cutmix": 1.0, "num_classes": 1}, "num_classes"),
    ({"aug_repeats": -1}, "aug_repeats"),
    ({"aug_repeats": 2.5}, "aug_repeats"),
])
def test_invalid_augmentation_settings_name_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        PipelineSpec(True, 8, **fields)


def test_num_classes_must_cover_the_dataset():
    with pytest.raises(ValueError, match="num_classes 5 is less than the dataset's 10 classes"):
        create_dataset(random_source(), PipelineSpec(True, 8, mixup=1.0, num_classes=5))


def map_operations(dataset) -> list:
    """The image operations of a built pipeline's map step."""
    node = dataset
    while not hasattr(node, "operations") and node.children:
        node = node.children[0]
    return list(node.operations)


#: What each policy is, from its paper and the reference implementations: RandAugment (Cubuk et
#: al., 2020) with timm's "m9 n2" = 2 ops at 9/10 of each op's range (timm divides m by 10);
#: AutoAugment's ImageNet policy (Cubuk et al., 2019; torchvision's AutoAugmentPolicy.IMAGENET);
#: TrivialAugment Wide (Mueller and Hutter, 2021) with torchvision's 31 magnitude bins.
POLICIES = [
    ("randaug", "RandAugment", {"num_ops": 2, "magnitude_fraction": 0.9}),
    ("randaug-m7-n3", "RandAugment", {"num_ops": 3, "magnitude_fraction": 0.7}),
    ("randaug-m0-n1", "RandAugment", {"num_ops": 1, "magnitude_fraction": 0.0}),
    ("autoaug", "AutoAugment", {"policy": "imagenet"}),
    ("trivialaugwide", "TrivialAugmentWide", {"num_magnitude_bins": 31}),
]


@pytest.mark.parametrize("spec,op_name,expected", POLICIES, ids=[p[0] for p in POLICIES])
def test_auto_augment_builds_the_named_policy(spec, op_name, expected):
    """The op the training pipeline maps, with the policy's counts and magnitudes, after the crop
    and flip on uint8 pixels, bilinear, filling with the dataset's mean colour."""
    from mindspore.dataset import vision

    from shufflenet.data.pipeline import build_transforms
    from shufflenet.data.presets import get_preprocessing

    operations = map_operations(create_dataset(random_source(), PipelineSpec(True, 8, auto_augment=spec))[0])
    names = [type(op).__name__ for op in operations]
    assert names == ["RandomCrop", "RandomHorizontalFlip", op_name, "Normalize", "HWC2CHW"]
    op = operations[2]
    got = {"policy": getattr(getattr(op, "policy", None), "value", None)}
    if op_name == "RandAugment":
        got.update(num_ops=op.num_ops, magnitude_fraction=op.magnitude / (op.num_magnitude_bins - 1))
    if op_name == "TrivialAugmentWide":
        got["num_magnitude_bins"] = op.num_magnitude_bins
    assert {key: got[key] for key in expected} == pytest.approx(expected)
    assert op.interpolation == vision.Inter.BILINEAR
    assert op.fill_value == tuple(round(v) for v in get_preprocessing("cifar10").mean)

    # ImageNet's recipe: the policy takes the colour jitter's place.
    imagenet = [type(op).__name__ for op in build_transforms(
        "imagenet", get_preprocessing("imagenet"), 64, True, auto_augment=spec)]
    assert imagenet == ["RandomResizedCrop", "RandomHorizontalFlip", op_name, "Normalize", "HWC2CHW"]
