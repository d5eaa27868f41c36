"""Dataset pipelines: shapes, labels, sharding, exactly-once evaluation, and every bad input."""
import os
import random
from collections import Counter

import mindspore.dataset as ds
import numpy as np
import pytest
from conftest import batches, make_image_folder, write_cifar
from PIL import Image

from shufflenet.data import (
    DataError,
    PipelineSpec,
    create_dataset,
    explain_pipeline_error,
    get_preprocessing,
    open_source,
    shard_order,
)
from shufflenet.data.sources import CIFAR10_RECORD


def labels_of(dataset):
    return np.concatenate([labels for _, labels in batches(dataset)])


def test_digits_is_the_default_with_a_fixed_stratified_split():
    train, val = open_source("auto", None, "train"), open_source("auto", None, "val")
    assert (len(train), len(val)) == (1437, 360)
    assert train.kind == "digits" and train.class_names == [str(i) for i in range(10)]
    counts = Counter(val.labels.tolist())
    assert min(counts.values()) >= 35 and max(counts.values()) <= 37  # 20 % of ~180 per class
    again = open_source("digits", None, "val")
    np.testing.assert_array_equal(val.images, again.images)


def test_digits_batches_shapes_dtypes_and_values():
    digits = open_source("digits", None, "train")
    dataset, info = create_dataset(digits, PipelineSpec(True, 32, image_size=48))
    images, labels = batches(dataset)[0]
    assert images.shape == (32, 3, 48, 48) and images.dtype == np.float32
    assert labels.dtype == np.int32 and set(labels) <= set(range(10))
    assert images.min() >= -1.0 and images.max() <= 1.0  # digits preset: 127.5 +- 127.5
    assert info.steps == 1437 // 32 and info.num_classes == 10


def test_image_folder_batches_and_class_names(tmp_path):
    root = make_image_folder(tmp_path)
    source = open_source("auto", str(root), "train")
    assert source.kind == "imagenet" and source.class_names == ["cat", "dog", "fox"]
    dataset, info = create_dataset(source, PipelineSpec(True, 4, image_size=32))
    images, labels = batches(dataset)[0]
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.float32 and labels.dtype == np.int32
    assert info.steps == 18 // 4


def test_evaluation_scores_every_sample_once_in_order(tmp_path):
    source = open_source("imagenet", str(make_image_folder(tmp_path, val=5)), "val")
    dataset, info = create_dataset(source, PipelineSpec(False, 4, image_size=32))
    labels = labels_of(dataset)
    assert len(labels) == info.num_samples == 15 and info.steps == 4  # last batch of 3 kept
    np.testing.assert_array_equal(labels, source.labels)


def test_sharded_evaluation_partitions_the_samples():
    source = open_source("digits", None, "val")
    seen = []
    for shard in range(3):
        dataset, info = create_dataset(source, PipelineSpec(False, 64, num_shards=3, shard_id=shard))
        seen.append(labels_of(dataset))
        assert info.num_samples == len(seen[-1])
    assert sum(len(s) for s in seen) == 360
    order = np.concatenate([shard_order(360, 3, k) for k in range(3)])
    assert sorted(order.tolist()) == list(range(360))


def test_training_shards_are_equal_disjoint_where_possible_and_cover_everything():
    shards = [shard_order(10, 4, k, shuffle_seed=7) for k in range(4)]
    assert {len(s) for s in shards} == {3}  # 10 samples padded to 12
    assert set(np.concatenate(shards).tolist()) == set(range(10))
    assert not np.array_equal(shard_order(10, 1, 0, 1), shard_order(10, 1, 0, 2))  # per epoch


def test_training_order_and_augmentation_depend_only_on_seed_and_epoch():
    source = open_source("digits", None, "train")

    def first_batch(epoch):
        return batches(create_dataset(source, PipelineSpec(True, 16, seed=3), epoch))[0]

    a, b, c = first_batch(2), first_batch(2), first_batch(3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def _random_state() -> tuple:
    seed, python, (_, keys, position, *_) = ds.config.get_seed(), random.getstate(), np.random.get_state()
    return seed, python, keys.tobytes(), position


def test_pipelines_change_no_process_wide_random_state():
    """create_dataset leaves MindSpore's dataset seed and Python's and numpy's generators as the
    caller had them; iterating under the epoch's seed (`seeded`) restores them afterwards."""
    source = open_source("digits", None, "train")
    before = _random_state()
    made = create_dataset(source, PipelineSpec(True, 16, seed=3, re_prob=0.5), 2)
    assert _random_state() == before
    assert batches(made) and _random_state() == before


def test_megvii_convention_feeds_bgr_pixels_in_0_255(tmp_path):
    root = tmp_path / "solid"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), (200, 100, 50), np.uint8)).save(root / split / "a" / "x.png")
    source = open_source("imagenet", str(root), "val")
    images, _ = batches(create_dataset(source, PipelineSpec(False, 1, 32, get_preprocessing("megvii"))))[0]
    np.testing.assert_allclose(images[0, :, 16, 16], [50, 100, 200])
    images, _ = batches(create_dataset(source, PipelineSpec(False, 1, image_size=32)))[0]
    np.testing.assert_allclose(images[0, :, 16, 16], [(200 - 123.675) / 58.395,
                                                      (100 - 116.28) / 57.12, (50 - 103.53) / 57.375],
                               rtol=1e-5)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar"))


def test_cifar10_binary_layout_and_tutorial_recipe(cifar_root):
    train = open_source("auto", str(cifar_root), "train")
    val = open_source("cifar10", str(cifar_root), "val")
    assert train.kind == "cifar10" and (len(train), len(val)) == (50_000, 10_000)
    raw = np.fromfile(cifar_root / "test_batch.bin", np.uint8).reshape(-1, CIFAR10_RECORD)
    np.testing.assert_array_equal(val.images[0], raw[0, 1:].reshape(3, 32, 32).transpose(1, 2, 0))
    assert val.labels[0] == raw[0, 0]
    for size in (32, 64):
        images, labels = batches(create_dataset(val, PipelineSpec(False, 8, image_size=size)))[0]
        assert images.shape == (8, 3, size, size) and labels.dtype == np.int32


@pytest.mark.parametrize("problem,message", [
    ({"skip": ["data_batch_3.bin"]}, "data_batch_3.bin is missing"),
    ({"truncate": ["data_batch_2.bin"]}, "data_batch_2.bin has 30729900 bytes"),
    ({"extra": ["data_batch_6.bin"]}, r"unexpected batch file\(s\) \['data_batch_6.bin'\]"),
])
def test_cifar10_damage_is_refused_before_training(tmp_path, problem, message):
    root = write_cifar(tmp_path / "cifar", **problem)
    with pytest.raises(DataError, match=message):
        open_source("cifar10", str(root), "train")


def test_bad_paths_and_layouts_are_explained(tmp_path):
    with pytest.raises(DataError, match="does not exist; check --data-path"):
        open_source("auto", str(tmp_path / "nope"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train is missing"):
        open_source("imagenet", str(tmp_path / "empty"), "train")
    (tmp_path / "empty" / "train").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        open_source("imagenet", str(tmp_path / "empty"), "train")
    root = make_image_folder(tmp_path / "ok")
    (root / "train" / "zebra").mkdir()
    (root / "train" / "zebra" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="zebra has no images"):
        open_source("imagenet", str(root), "train")
    root = make_image_folder(tmp_path / "ok2")
    (root / "val" / "yak").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['yak'\]"):
        open_source("imagenet", str(root), "val")
    with pytest.raises(DataError, match="unknown dataset"):
        open_source("mnist", None, "train")


def _corrupt(root):
    """A truncated JPEG and a text file named .jpg, the kinds that crash MindSpore's decoder."""
    good = root / "train" / "cat" / "cat_0.jpg"
    (root / "train" / "cat" / "broken.jpg").write_bytes(good.read_bytes()[:200])
    (root / "train" / "dog" / "readme.jpg").write_text("not an image")


def test_corrupt_images_stop_with_the_file_name_and_write_nothing(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "data")
    _corrupt(root)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    source = open_source("imagenet", str(root), "train")
    dataset, _ = create_dataset(source, PipelineSpec(False, 4, image_size=32))
    with pytest.raises(RuntimeError) as caught:
        batches(dataset)
    line = explain_pipeline_error(caught.value)
    assert line and line.startswith("bad image: ") and ("broken.jpg" in line or "readme.jpg" in line)
    assert "--skip-bad-images" in line
    assert os.listdir(work) == []


def test_corrupt_images_are_skipped_and_counted_on_request(tmp_path):
    root = make_image_folder(tmp_path)
    _corrupt(root)
    source = open_source("imagenet", str(root), "train", skip_bad_images=True)
    dataset, info = create_dataset(source, PipelineSpec(False, 4, image_size=32))
    assert info.num_samples == 20
    assert len(labels_of(dataset)) == 18  # 20 files, 2 skipped


def test_single_images_get_exactly_what_the_evaluation_pipeline_feeds(tmp_path):
    from shufflenet.data.images import load_image
    from shufflenet.data.pipeline import preprocess_image
    from shufflenet.data.presets import get_preprocessing

    root = make_image_folder(tmp_path, val=2, size=57)
    source = open_source("imagenet", str(root), "val")
    for preset in ("imagenet", "megvii", "cifar10"):
        spec = PipelineSpec(False, 6, 32, get_preprocessing(preset))
        images, _ = batches(create_dataset(source, spec))[0]
        for row, path in enumerate(source.files):
            single = preprocess_image(load_image(path), 32, get_preprocessing(preset))
            np.testing.assert_array_equal(single, images[row])


def test_training_replaces_skipped_images_so_every_shard_keeps_its_steps(tmp_path):
    root = make_image_folder(tmp_path)
    _corrupt(root)
    source = open_source("imagenet", str(root), "train", skip_bad_images=True)
    for shard in range(2):
        dataset, info = create_dataset(source, PipelineSpec(True, 4, 32, num_shards=2, shard_id=shard))
        labels = labels_of(dataset)
        assert len(labels) == info.steps * 4 == 8 and labels.min() >= 0
