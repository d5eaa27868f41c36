"""Top-1, top-5 and loss of a .ckpt or exported .mindir over every sample of a validation set."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..data import create_dataset, explained_pipeline_errors, open_source
from ..engine.config import DEVICES
from ..engine.context import setup_context
from ..engine.evaluator import all_reduce_sum, evaluate, load_mindir
from ..models.shufflenet_v1 import POOL_PADDINGS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eval.py", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="MindSpore checkpoint (this project's, the tutorial's, the zoo's)")
    source.add_argument("--mindir", help="exported MINDIR (its sidecar JSON must sit next to it)")
    parser.add_argument("--model", help="model name, for checkpoints that do not record it")
    parser.add_argument("--pool-padding", choices=POOL_PADDINGS,
                        help="override the pooling the checkpoint records")
    parser.add_argument("--dataset", default="auto", help="auto | imagenet | cifar10 | digits")
    parser.add_argument("--data-path", help="dataset folder; none: the bundled digits")
    parser.add_argument("--image-size", type=int, help="default: the model's recorded size")
    parser.add_argument("--preprocessing", help="default: the model's recorded convention")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--skip-bad-images", action="store_true")
    parser.add_argument("--device-target", default="CPU", choices=DEVICES)
    parser.add_argument("--distributed", action="store_true", help="each rank scores its shard")
    parser.add_argument("--output", help="JSON file for the results (default: next to the model)")
    return parser


def run(args: argparse.Namespace) -> dict:
    model_file = Path(args.ckpt or args.mindir)
    if not model_file.is_file():
        raise ValueError(f"{model_file} does not exist; check --ckpt/--mindir")
    source = open_source(args.dataset, args.data_path, "val", args.skip_bad_images)
    ranks = setup_context(args.device_target, args.distributed)
    if args.ckpt:
        from ..export import load_network

        options = {"pool_padding": args.pool_padding} if args.pool_padding else None
        net, described = load_network(args.ckpt, args.model, options=options)
        num_classes, image_size = described["num_classes"], described.get("image_size")
        preprocessing = described.get("preprocessing")
        fixed_batch = None
    else:
        from ..export import read_sidecar

        sidecar = read_sidecar(args.mindir)
        net = load_mindir(args.mindir)
        num_classes, image_size = len(sidecar["class_names"]), sidecar["image_size"]
        preprocessing = sidecar["preprocessing"]["name"]
        fixed_batch = sidecar["input_shape"][0]
        if args.image_size not in (None, image_size):
            raise ValueError(f"{model_file} was exported for {image_size}px inputs; drop --image-size "
                             "or re-export it at the size you need")
    if num_classes != len(source.class_names):
        raise ValueError(f"{model_file} predicts {num_classes} classes but the dataset has "
                         f"{len(source.class_names)}; evaluate on the dataset it was trained for")
    batch_size = fixed_batch or args.batch_size
    dataset, info = create_dataset(source, False, batch_size, args.image_size or image_size,
                                   args.preprocessing or preprocessing, ranks.size, ranks.rank,
                                   num_workers=args.num_workers)
    if fixed_batch:
        net = _padded(net, fixed_batch)
    with explained_pipeline_errors():
        result = evaluate(net, dataset, all_reduce_sum if ranks.size > 1 else None)
    result = {"model_file": str(model_file), "dataset": info.kind, "image_size": info.image_size,
              **result}
    if ranks.is_main:
        output = Path(args.output) if args.output else model_file.with_suffix(".eval.json")
        output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{model_file.name}: top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} "
              f"loss {result['loss']:.4f} on {result['samples']} {info.kind} images -> {output}")
    return result


def _padded(graph, batch: int):
    """A fixed-batch MINDIR scores a smaller last batch by padding it and dropping the pad."""
    from mindspore import Tensor

    def call(images):
        n = images.shape[0]
        if n == batch:
            return graph(images)
        pad = np.zeros((batch - n, *images.shape[1:]), np.float32)
        return Tensor(graph(Tensor(np.concatenate([images.asnumpy(), pad]))).asnumpy()[:n])

    return call


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
