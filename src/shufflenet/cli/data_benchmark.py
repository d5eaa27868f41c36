"""Images/s of the train and eval pipelines at 224 (JPEG folders) and 32 (CIFAR-10 arrays).

Generates its own data in a temporary folder: ImageNet-sized JPEGs (500x375, the ImageNet
median) and CIFAR-10-shaped arrays, so the figures need no download.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.pipeline import PipelineSpec, create_dataset
from ..data.sources import CIFAR10_CLASSES, ArraySource, ImageFileSource, load_image_folder


def make_jpeg_folder(root: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for k in range(4):
            (root / split / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        # Smooth random images compress like photographs (noise would not).
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        for split in ("train", "val"):
            image.save(root / split / f"class{i % 4}" / f"{i}.jpg", quality=90)
    return root


def cifar_like(count: int, seed: int = 0) -> ArraySource:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return ArraySource(images, rng.integers(0, 10, count).astype(np.int32), list(CIFAR10_CLASSES), "cifar10")


def repeated(source: ImageFileSource, times: int) -> ImageFileSource:
    """The same files several times over: long enough a run without generating more JPEGs."""
    return dataclasses.replace(source, files=source.files * times, labels=np.tile(source.labels, times))


def images_per_second(source, training: bool, image_size: int, workers: int, batch: int) -> float:
    dataset, _ = create_dataset(source, PipelineSpec(training, batch, image_size, num_workers=workers))
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(iterator)  # start-up (worker processes, first decode) is not throughput
    start, seen = time.perf_counter(), 0
    for _, labels in iterator:
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def run(jpegs: int, arrays: int, workers: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_jpeg_folder(Path(tmp), jpegs)
        sources = {224: lambda split: repeated(load_image_folder(str(folder), split), 8),
                   32: lambda split: cifar_like(arrays)}
        for size, make in sources.items():
            for training in (True, False):
                source = make("train" if training else "val")
                for n in workers:
                    rate = images_per_second(source, training, size, n, 32 if size == 224 else 128)
                    rows.append({"pipeline": "train" if training else "eval", "image_size": size,
                                 "source": "JPEG folder" if size == 224 else "CIFAR-10 arrays",
                                 "workers": n, "images_per_s": round(rate, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shufflenet data-benchmark", description=__doc__)
    parser.add_argument("--jpegs", type=int, default=256,
                        help="generated 500x375 JPEGs per split (each read 8 times)")
    parser.add_argument("--arrays", type=int, default=8192, help="generated 32x32 images")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.workers) < 1:
        parser.error("--workers must be at least 1")
    if args.jpegs < 64 or args.arrays < 512:
        parser.error("use at least 64 JPEGs and 512 arrays, or the start-up dominates")
    rows = run(args.jpegs, args.arrays, args.workers)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| pipeline | input | source | workers | images/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pipeline']} | {r['image_size']}px | {r['source']} | {r['workers']} | "
              f"{r['images_per_s']:.0f} |")
    return 0
