"""The training loop: data, model, schedule, checkpoints, evaluation, logs, export.

`train(config)` assumes the MindSpore context is set (the CLI does it: graph mode, device,
communication for data parallelism). Everything a run writes goes to `config.output_dir`, by
rank 0 only; the other ranks train and evaluate their shard.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np
from mindspore import nn

from ..data import DataError, create_dataset, explained_pipeline_errors, open_source
from ..models import create_model
from ..utils.checkpoint import (
    META_KEY,
    CheckpointError,
    load_weights,
    model_description,
    read_checkpoint,
    read_description,
    save_checkpoint,
    scalar,
)
from .config import Config, save_config
from .evaluator import all_reduce_sum, evaluate
from .optim import build_optimizer
from .schedule import warmup_cosine_lr

CHECKPOINT_DIR = "checkpoints"
EPOCH_CHECKPOINT = re.compile(r"epoch-(\d+)\.ckpt$")
AMP_BY_DEVICE = {"CPU": "O0", "GPU": "O2", "Ascend": "O3"}


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    size: int = 1
    local: int = 0  # rank within the node

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def network_options(config: Config) -> dict:
    return {"pool_padding": config.pool_padding, "classifier_bias": config.classifier_bias,
            "group_conv": config.group_conv}


def resolve_amp_level(config: Config) -> str:
    """fp32 on CPU: fp16 runs there but 3.5-4.7x slower, and bf16 fails (MindSpore 2.10)."""
    return AMP_BY_DEVICE[config.device_target] if config.amp_level == "auto" else config.amp_level


def checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / f"epoch-{epoch:04d}.ckpt"


def epoch_checkpoints(output_dir: str | Path) -> list[Path]:
    """Epoch checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("epoch-*.ckpt")
             if (m := EPOCH_CHECKPOINT.search(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(config: Config) -> Path | None:
    if config.resume is None:
        return None
    if config.resume == "auto":
        found = epoch_checkpoints(config.output_dir)
        return found[-1] if found else None
    return Path(config.resume)


class Logger:
    """Progress on stdout (a live bar on a terminal) and in `train.log`; rank 0 only."""

    def __init__(self, log_file: Path | None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stdout.isatty()
        self.log_file = log_file
        if enabled and log_file:
            log_file.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(line, flush=True)
        if self.log_file:
            with open(self.log_file, "a") as handle:
                handle.write(line + "\n")

    def bar(self, line: str) -> None:
        if self.enabled and self.tty:
            sys.stdout.write("\r\033[K" + line)
            sys.stdout.flush()


def train(config: Config, ranks: Ranks = Ranks(), log: Callable[[str], None] | None = None) -> dict:
    """Train, evaluate, checkpoint and export as `config` says; returns the final metrics."""
    out = Path(config.output_dir)
    logger = Logger(out / "train.log" if ranks.is_main else None, ranks.is_main)
    log = log or logger
    resume_from = resolve_resume(config)

    # Everything that can be wrong with the inputs is found here, before any compilation.
    train_src = open_source(config.dataset, config.data_path, "train", config.skip_bad_images)
    val_src = open_source(config.dataset, config.data_path, "val", config.skip_bad_images)
    resume_params = read_checkpoint(resume_from) if resume_from else None
    pretrained_params = read_checkpoint(config.pretrained) if config.pretrained else None

    ms.set_seed(config.seed)
    num_classes = len(train_src.class_names)
    net = create_model(config.model, num_classes=num_classes, **network_options(config))
    if pretrained_params is not None:
        reset = load_weights(net, pretrained_params, skip_classifier_mismatch=True, source=config.pretrained)
        log(f"pretrained weights from {config.pretrained}" + (f" (new classifier: {reset})" if reset else ""))

    def epoch_data(epoch: int, training: bool):
        return create_dataset(
            train_src if training else val_src, training, config.batch_size, config.image_size,
            config.preprocessing, ranks.size, ranks.rank, epoch, config.seed, config.num_workers,
            augment=config.augment and training)

    _, info = epoch_data(0, True)
    description = model_description(config.model, num_classes, network_options(config),
                                     info.preprocessing, info.class_names, info.image_size)
    lrs = warmup_cosine_lr(config.lr, config.min_lr, config.epochs, info.steps, config.warmup_epochs)
    optimizer = build_optimizer(net, lrs, config.momentum, config.weight_decay, config.loss_scale)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    manager = (ms.amp.FixedLossScaleManager(config.loss_scale, drop_overflow_update=False)
               if config.loss_scale > 1 else None)
    amp_level = resolve_amp_level(config)
    train_net = ms.amp.build_train_network(net, optimizer, loss_fn, level=amp_level,
                                           loss_scale_manager=manager)

    start_epoch, best_top1 = 0, -1.0
    if resume_params is not None:
        start_epoch, best_top1 = _restore(net, optimizer, resume_params, resume_from, config, info.steps)
        log(f"resumed from {resume_from} at epoch {start_epoch}")
    if ranks.size > 1:
        _check_ranks_agree(start_epoch, ranks.size)
    if ranks.is_main:
        save_config(config, out / "config.yaml")
    log(f"{config.model}: {info.kind} ({len(train_src)} train / {len(val_src)} val images, "
        f"{num_classes} classes) at {info.image_size}px, batch {config.batch_size} x {ranks.size} "
        f"device(s), {info.steps} steps/epoch, {config.epochs} epochs, amp {amp_level}")

    reduce = all_reduce_sum if ranks.size > 1 else None
    metrics_file = out / "metrics.csv"
    total_steps, run_start = config.epochs * info.steps, time.time()
    final = {}
    for epoch in range(start_epoch, config.epochs):
        dataset, info = epoch_data(epoch, True)
        train_net.set_train(True)
        losses, tick, seen, epoch_start = [], time.time(), 0, time.time()
        if config.dataset_sink:  # the whole epoch in one device call; its loss is the last step's
            with explained_pipeline_errors():
                batches = [(info.steps, info.steps * config.batch_size,
                            ms.data_sink(train_net, dataset, sink_size=info.steps)())]
        else:
            batches = ((step, len(labels), train_net(images, labels))
                       for step, (images, labels) in enumerate(_iterate(dataset), start=1))
        for step, count, loss in batches:
            losses.append(float(loss.asnumpy()))
            if not np.isfinite(losses[-1]):
                raise FloatingPointError(f"loss became {losses[-1]} at epoch {epoch + 1} step {step}; "
                                         "lower --lr or raise --warmup-epochs")
            seen += count
            global_step = epoch * info.steps + step
            if step % config.log_interval == 0 or step == info.steps:
                rate = seen * ranks.size / max(time.time() - tick, 1e-9)
                done = global_step - start_epoch * info.steps
                eta = (time.time() - run_start) / done * (total_steps - global_step)
                line = (f"epoch {epoch + 1}/{config.epochs} step {step}/{info.steps} "
                        f"loss {np.mean(losses[-config.log_interval:]):.4f} "
                        f"lr {lrs[global_step - 1]:.5f} {rate:.1f} img/s eta {_hms(eta)}")
                (logger.bar if logger.tty and step != info.steps else log)(line)
                tick, seen = time.time(), 0
        if not losses:
            raise DataError("the training pipeline yielded no batches; check the dataset")
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
               "lr": float(lrs[(epoch + 1) * info.steps - 1]), "epoch_seconds": time.time() - epoch_start}
        last = epoch + 1 == config.epochs
        if last or (config.eval_interval and (epoch + 1) % config.eval_interval == 0):
            final = evaluate(net, epoch_data(0, False)[0], reduce)
            row.update({f"val_{k}": v for k, v in final.items() if k != "samples"})
            log(f"epoch {epoch + 1}: val top-1 {final['top1']:.4f} top-5 {final['top5']:.4f} "
                f"loss {final['loss']:.4f} ({final['samples']} samples)")
        if ranks.is_main:
            best_top1 = _save_epoch(train_net, net, config, epoch + 1, description, row, best_top1)
            _append_csv(metrics_file, row)

    if not final:  # resumed from the last epoch: score the model once more
        final = evaluate(net, epoch_data(0, False)[0], reduce)
    if ranks.size > 1:  # every rank, so its log shows that the replicas agree
        print(f"rank {ranks.rank}: trained weights sha256 {weights_fingerprint(net)}", flush=True)
    if ranks.is_main:
        return _finish(net, config, description, final, metrics_file, log)
    return final


def weights_fingerprint(net: nn.Cell) -> str:
    """SHA-256 of the trainable parameters in name order.

    BatchNorm running statistics are left out: each rank averages its own shard's batches
    (no synchronised BatchNorm), so only rank 0's are saved.
    """
    digest = hashlib.sha256()
    for param in sorted(net.trainable_params(), key=lambda p: p.name):
        digest.update(param.name.encode())
        digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
    return digest.hexdigest()


def _restore(net: nn.Cell, optimizer: nn.Optimizer, params: dict, path: Path, config: Config,
             steps_per_epoch: int) -> tuple[int, float]:
    """Network weights and momentum buffers from `params`; the schedule is the current one.

    The learning-rate array and step counter are derived from the configuration, not loaded:
    training continues at the first step of the saved epoch, so a resumed run may change the
    batch size, device count or schedule.
    """
    described = read_description(params)
    if described and described["model"] != config.model:
        raise CheckpointError(
            f"{path} was trained as {described['model']}, not {config.model}; pass --model "
            f"{described['model']} or another checkpoint")
    epoch = int(scalar(params, "epoch", 0))
    if epoch > config.epochs:
        raise CheckpointError(f"{path} is from epoch {epoch}, beyond --epochs {config.epochs}")
    load_weights(list(net.get_parameters()) + list(optimizer.moments), params, source=str(path))
    optimizer.global_step.set_data(ms.Tensor([epoch * steps_per_epoch], ms.int32))
    return epoch, float(scalar(params, "best_top1", -1.0))


def _save_epoch(train_net, net, config, epoch, description, row, best_top1) -> float:
    meta = {META_KEY: json.dumps(description), "epoch": epoch}
    top1 = row.get("val_top1")
    if top1 is not None and top1 > best_top1:
        best_top1 = top1
        save_checkpoint(net, Path(config.output_dir) / "best.ckpt", {**meta, "top1": float(top1)})
    save_checkpoint(train_net, checkpoint_path(config.output_dir, epoch),
                    {**meta, "best_top1": float(best_top1)})
    for old in epoch_checkpoints(config.output_dir)[:-config.keep_checkpoints]:
        old.unlink()
    return best_top1


def _finish(net, config, description, final, metrics_file, log) -> dict:
    out = Path(config.output_dir)
    result = {"model": config.model, **final}
    save_checkpoint(net, out / "final.ckpt", {META_KEY: json.dumps(description), "epoch": config.epochs})
    (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(metrics_file, out / "curves.png")
    written = [out / "final.ckpt", out / "best.ckpt", out / "eval.json", metrics_file, out / "curves.png"]
    if config.export:
        from ..export import DYNAMIC_BATCH, export_model

        written.append(export_model(net, "MINDIR", out / "model", batch_size=DYNAMIC_BATCH,
                                    image_size=description["image_size"], description=description))
    log("wrote " + ", ".join(str(p) for p in written if p.exists()))
    return result


def _iterate(dataset):
    """Batches of a pipeline, with a bad image's own message instead of MindSpore's traceback."""
    with explained_pipeline_errors():
        yield from dataset.create_tuple_iterator(num_epochs=1)


def _check_ranks_agree(start_epoch: int, size: int) -> None:
    """Every rank must resume from the same epoch, or the collectives would hang.

    MindSpore's CPU AllReduce only sums, so the ranks compare sum and sum of squares: all
    values are equal exactly when size * sum(x^2) == sum(x)^2, the same verdict on every rank.
    """
    total, squares = all_reduce_sum(np.array([start_epoch, start_epoch**2], np.float64))
    if size * squares != total**2:
        raise CheckpointError(
            f"ranks would resume from different epochs (this one: {start_epoch}, mean "
            f"{total / size:g}): every rank must see the same --output-dir (shared storage) or be "
            "given the same --resume file")


def _append_csv(path: Path, row: dict) -> None:
    columns = ["epoch", "train_loss", "lr", "epoch_seconds", "val_top1", "val_top5", "val_loss"]
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def _plot(metrics_file: Path, png: Path) -> None:
    """Loss and accuracy per epoch; skipped quietly when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    with open(metrics_file) as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [float(r["train_loss"]) for r in rows], label="train loss")
    val = [(int(r["epoch"]), float(r["val_loss"]), float(r["val_top1"]), float(r["val_top5"]))
           for r in rows if r.get("val_top1")]
    if val:
        left.plot([v[0] for v in val], [v[1] for v in val], "o-", label="val loss")
        right.plot([v[0] for v in val], [v[2] for v in val], "o-", label="val top-1")
        right.plot([v[0] for v in val], [v[3] for v in val], "o-", label="val top-5")
    for axis, title in ((left, "loss"), (right, "accuracy")):
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.legend()
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

