"""The training loop in parts, after torchvision's reference script: build the run, train one
epoch, evaluate, save, finish.

`train(config)` assumes the MindSpore context is set (the CLI does it: graph mode, device,
communication for data parallelism). Everything a run writes goes to `config.output_dir`, by
rank 0 only; the other ranks train and evaluate their shard. Input size, preprocessing and
steps per epoch are resolved once, in `build_run`, before any pipeline exists.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import nn

from ..data import (
    DataError,
    PipelineSpec,
    create_dataset,
    explained_pipeline_errors,
    get_preprocessing,
    open_source,
    seeded,
)
from ..data.sources import ArraySource, ImageFileSource
from ..inference import from_network, read_weights
from ..kernels import KernelUnavailable, use_cpu_kernels
from ..models import ModelDescription, create_model, describe, head_prefix, read_description
from ..pretrained import resolve_weights
from ..utils.checkpoint import CheckpointError, load_weights, read_checkpoint, save_checkpoint, scalar
from ..utils.checkpoint_schema import EMA_WEIGHTS, EPOCH_KEY, RAW_WEIGHTS, TOP1_KEY, checkpoint_extra
from ..utils.files import atomic_path, open_for_append, write_text
from .config import TRAIN_PIPELINE_KEYS, Config, save_config
from .context import Ranks
from .evaluator import all_reduce_sum, evaluate
from .optim import build_optimizer
from .recalibrate import batchnorm_layers, recalibrate_batchnorm
from .run_folder import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    CURVES_FILE,
    EVAL_FILE,
    EXPORT_FILE,
    FINAL_CHECKPOINT,
    FINAL_EMA_CHECKPOINT,
    LOG_FILE,
    METRICS_FILE,
    RunFolder,
    checkpoint_path,
    claim_output_dir,
    epoch_checkpoints,
    resolve_resume,
)
from .schedule import lr_schedule
from .train_step import STATE_PREFIXES, TrainStep, WithLoss, ema_parameters, swapped

Source = Union[ArraySource, ImageFileSource]
AMP_BY_DEVICE = {"CPU": "O0", "GPU": "O2", "Ascend": "O3"}


def resolve_amp_level(config: Config) -> str:
    """fp32 on CPU: fp16 runs there but 3.5-4.7x slower, and bf16 fails (MindSpore 2.10)."""
    return AMP_BY_DEVICE[config.device_target] if config.amp_level == "auto" else config.amp_level


class Logger:
    """Progress on stdout (a live bar on a terminal) and in `train.log`; rank 0 only.

    Lines reach `train.log` from `start()` on (the run's checks passed; earlier lines are
    written then), so a refused run leaves no log; the log is never opened through a link.
    """

    def __init__(self, log_file: Path | None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stdout.isatty()
        self.console = True
        self.log_file = log_file
        self.pending: list[str] | None = []  # None once started

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        if self.console:
            self._print(("\r\033[K" if self.tty else "") + line + "\n")
        if self.log_file and self.pending is not None:
            self.pending.append(line)
        elif self.log_file:
            self._write([line])

    def start(self) -> None:
        """Write the lines held back so far, and every later one as it comes."""
        lines, self.pending = self.pending or [], None
        if self.enabled and self.log_file and lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        with open_for_append(self.log_file) as handle:
            handle.write("".join(line + "\n" for line in lines))

    def bar(self, line: str) -> None:
        if self.enabled and self.tty and self.console:
            self._print("\r\033[K" + line)

    def _print(self, text: str) -> None:
        """A reader that went away (`train.py | head`) stops the console output, not training;
        the process's stdout is the command's to settle (`cli.common.console_may_close`)."""
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            self.console = False


@dataclass
class Run:
    """Everything one training run holds, built once by `build_run`."""

    config: Config
    ranks: Ranks
    logger: Logger
    log: Callable[[str], None]
    train_source: Source
    val_source: Source
    train_spec: PipelineSpec  # resolved: image size, preprocessing, augmentation
    val_spec: PipelineSpec
    description: ModelDescription
    steps: int  # per epoch
    lrs: np.ndarray  # per step
    net: nn.Cell
    optimizer: nn.Optimizer
    train_net: nn.Cell
    amp_level: str
    start_epoch: int = 0
    best_top1: float = -1.0
    resumed_from: Optional[Path] = None
    started: float = 0.0  # time.time() when training began, for the ETA
    folder: Optional[RunFolder] = None  # rank 0: the claimed output folder, released at the end

    @property
    def out(self) -> Path:
        return Path(self.config.output_dir)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; the message says how to continue."""


def train(config: Config, ranks: Ranks | None = None, log: Callable[[str], None] | None = None,
          default_folder: bool = False) -> dict:
    """Train, evaluate, checkpoint and export as `config` says; returns the final metrics.

    `default_folder`: `config.output_dir` is the recipe's, not the user's choice (see
    `run_folder.claim_output_dir`).
    """
    ranks = ranks or Ranks()
    run = build_run(config, ranks, log, default_folder)
    with run.folder or contextlib.nullcontext():
        try:
            final = train_epochs(run)
            if config.bn_recalibrate:
                final = recalibrate(run)
        except KeyboardInterrupt:
            found = epoch_checkpoints(run.out)
            where = f"the last checkpoint is {found[-1]}" if found else "no epoch finished"
            raise Interrupted(f"interrupted: {where}; continue with --resume auto --output-dir {run.out}"
                              ) from None
        return finish(run, final) if ranks.is_main else final


def train_epochs(run: Run) -> dict:
    """The epochs left; each is checkpointed before it is evaluated. Returns the last scores."""
    config, ranks = run.config, run.ranks
    final: dict = {}
    for epoch in range(run.start_epoch, config.epochs):
        row = train_one_epoch(run, epoch)
        if ranks.is_main:
            save_epoch(run, epoch + 1)
        last = epoch + 1 == config.epochs
        if last or (config.eval_interval and (epoch + 1) % config.eval_interval == 0):
            final = evaluate_run(run, epoch + 1)
            row.update({f"val_{k}": v for k, v in final.items() if k != "samples"})
        if ranks.is_main:
            record_epoch(run, epoch + 1, row)
    if not final:  # resumed from the last epoch: score the model once more
        final = evaluate_run(run, config.epochs)
    if ranks.size > 1:  # every rank, so its log shows that the replicas agree
        print(f"rank {ranks.rank}: trained weights sha256 {weights_fingerprint(run.net)}", flush=True)
    return final


def build_run(config: Config, ranks: Ranks, log: Callable[[str], None] | None = None,
              default_folder: bool = False) -> Run:
    """Claim the output folder (rank 0, the only writer: the other ranks keep the folder they
    were given), then build the run in it; a run refused meanwhile leaves nothing there."""
    notes: list[str] = []  # logged once the log exists
    folder = claim_output_dir(config, default_folder, notes.append) if ranks.is_main else None
    try:
        return _build_run(folder.config if folder else config, ranks, log, notes, folder)
    except BaseException:
        if folder is not None:
            folder.abandon()
        raise


def _build_run(config: Config, ranks: Ranks, log: Callable[[str], None] | None, notes: list[str],
               folder: RunFolder | None) -> Run:
    """Open the data, resolve the inputs, build network and optimizer, restore a resumed run.

    Everything that can be wrong with the inputs is found here, before any compilation and
    before anything is written.
    """
    resume_from = resolve_resume(config, notes.append)
    logger = Logger(Path(config.output_dir) / LOG_FILE if ranks.is_main else None, ranks.is_main)
    log = log or logger
    for note in notes:
        log(note)
    train_source = open_source(config.dataset, config.data_path, "train", config.skip_bad_images)
    val_source = open_source(config.dataset, config.data_path, "val", config.skip_bad_images)
    resume_params = read_checkpoint(resume_from) if resume_from else None
    pretrained_params, pretrained_from, config = read_pretrained(config)

    train_spec, val_spec, description = resolve_inputs(config, ranks, train_source)
    steps = train_spec.steps(len(train_source))
    ms.set_seed(config.seed)
    net = create_model(config.model, num_classes=description.num_classes, **config.model_options)
    amp_level = resolve_amp_level(config)
    kernels_note = cpu_kernels(net, config, amp_level)
    if config.bn_recalibrate:  # refused before training when there is nothing to recalibrate
        try:
            batchnorm_layers(net)
        except ValueError as err:
            raise ValueError(f"--bn-recalibrate: {err}") from None
    if pretrained_params is not None:
        reset = load_weights(net, pretrained_params, new_head=head_prefix(config.model),
                             source=pretrained_from)
        log(f"pretrained weights from {pretrained_from}" + (f" (new classifier: {reset})" if reset else ""))
    lrs = lr_schedule(config.lr, config.min_lr, config.epochs, steps, config.warmup_epochs, config.scheduler,
                      config.decay_epochs, config.decay_rate, config.milestones)
    every = config.gradient_accumulation_steps  # one update per window, at its last batch's lr
    optimizer = build_optimizer(net, lrs[every - 1::every], config.momentum, config.weight_decay,
                                config.opt, config.eps)
    train_net = build_train_network(net, optimizer, config, amp_level, train_spec.soft_targets)
    run = Run(config, ranks, logger, log, train_source, val_source, train_spec, val_spec, description,
              steps, lrs, net, optimizer, train_net, amp_level, folder=folder)
    if resume_params is not None:
        run.start_epoch = _restore(run, resume_params, resume_from)
        run.best_top1 = best_score(run.out)
        run.resumed_from = resume_from
        log(f"resumed from {resume_from} at epoch {run.start_epoch}")
    if ranks.size > 1:
        _check_ranks_agree(run.start_epoch, ranks.size)
    if folder is not None:  # the checks passed: from here on the run writes
        folder.start(log)
        logger.start()
        save_config(config, run.out / CONFIG_FILE)
    log(f"{config.model}: {train_source.kind} ({len(train_source)} train / {len(val_source)} val images, "
        f"{description.num_classes} classes) at {description.image_size}px, batch {config.batch_size} x "
        f"{ranks.size} device(s), {steps} steps/epoch, {config.epochs} epochs, amp {amp_level}")
    if kernels_note:
        log(kernels_note)
    run.started = time.time()
    return run


def cpu_kernels(net: nn.Cell, config: Config, amp_level: str) -> str:
    """Swap in the C++ CPU kernels as `cpu_kernels` asks (fp32 on CPU only); returns a log line.

    `on` raises (before any compilation of the network) what `auto` only logs: no compiler, a
    failed build, a device other than CPU, mixed precision.
    """
    if config.cpu_kernels == "off" or (config.cpu_kernels == "auto" and config.device_target != "CPU"):
        return ""
    why_not = ""
    if config.device_target != "CPU":
        why_not = f"they run on CPU only, not {config.device_target}"
    elif amp_level != "O0":
        why_not = f"they compute in fp32 only, and amp_level is {amp_level}"
    else:
        try:
            swapped = use_cpu_kernels(net)
        except KernelUnavailable as err:
            why_not = str(err)
        else:
            return "C++ CPU kernels: " + ", ".join(f"{n} {kind}" for kind, n in swapped.items())
    if config.cpu_kernels == "on":
        raise ValueError(f"--cpu-kernels on: {why_not}")
    return f"C++ CPU kernels not used ({why_not}); MindSpore's own kernels train ~30 % slower"


def read_pretrained(config: Config) -> tuple[dict | None, str, Config]:
    """The weights `--pretrained` names (a checkpoint path, or a tag of the weight table), where
    they come from, and the config with the network options and input convention they were made
    with where they record them: a torchvision ShuffleNetV2 is built in torchvision's layout and
    fed ImageNet input. Options and `--preprocessing` given explicitly win."""
    if not config.pretrained:
        return None, "", config
    path = resolve_weights(config.pretrained, config.model, config.weights_table)
    source = str(path) if str(path) == config.pretrained else f"{config.pretrained} ({path})"
    params = read_weights(path)
    recorded = read_description(params, source)
    if recorded is None:
        return params, source, config
    if recorded.model != config.model:
        raise ValueError(f"--pretrained {source} holds {recorded.model} weights, not --model {config.model}; "
                         f"pass --model {recorded.model} or other weights")
    return params, source, dataclasses.replace(
        config, model_options={**recorded.options, **config.model_options},
        preprocessing=config.preprocessing or recorded.preprocessing)


def resolve_inputs(config: Config, ranks: Ranks, source: Source) -> tuple[PipelineSpec, PipelineSpec,
                                                                         ModelDescription]:
    """The train and evaluation pipelines' specs and the model's description, decided once."""
    preprocessing = config.preprocessing or source.kind  # each dataset has a preset of its name
    common = {"batch_size": config.batch_size, "image_size": config.image_size,
              "preprocessing": get_preprocessing(preprocessing), "num_shards": ranks.size,
              "shard_id": ranks.rank, "seed": config.seed, "num_workers": config.num_workers}
    features = {key: getattr(config, key) for key in TRAIN_PIPELINE_KEYS}
    train_spec = PipelineSpec(True, augment=config.augment, num_classes=len(source.class_names), **features,
                              **common).resolved(source.kind)
    val_spec = PipelineSpec(False, **common).resolved(source.kind)
    description = describe(config.model, len(source.class_names), options=config.model_options,
                           preprocessing=preprocessing, class_names=tuple(source.class_names),
                           image_size=train_spec.image_size)
    return train_spec, val_spec, description


def build_train_network(net: nn.Cell, optimizer: nn.Optimizer, config: Config, amp_level: str,
                        soft_targets: bool) -> TrainStep:
    """`soft_targets`: the pipeline mixes batches and folds label smoothing into the targets."""
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.0 if soft_targets else config.label_smoothing)
    network = WithLoss(ms.amp.auto_mixed_precision(net, amp_level), loss_fn)
    return TrainStep(network, optimizer, config.loss_scale, config.loss_scale_type == "dynamic",
                     config.gradient_accumulation_steps, config.clip_value if config.clip_grad else 0.0,
                     config.ema_decay if config.ema else 0.0)


def train_one_epoch(run: Run, epoch: int) -> dict:
    """One pass over this rank's shard; returns the epoch's row of metrics.csv."""
    config, steps = run.config, run.steps
    dataset, info = create_dataset(run.train_source, run.train_spec, epoch)
    run.train_net.set_train(True)
    losses, tick, seen, epoch_start = [], time.time(), 0, time.time()
    for step, count, loss in _train_steps(run, dataset, info.seed):
        losses.append(float(loss.asnumpy()))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"loss became {losses[-1]} at epoch {epoch + 1} step {step}; "
                                     "lower --lr or raise --warmup-epochs")
        seen += count
        if step % config.log_interval == 0 or step == steps:
            rate = seen * run.ranks.size / max(time.time() - tick, 1e-9)
            global_step = epoch * steps + step
            done = global_step - run.start_epoch * steps
            eta = (time.time() - run.started) / done * (config.epochs * steps - global_step)
            line = (f"epoch {epoch + 1}/{config.epochs} step {step}/{steps} "
                    f"loss {np.mean(losses[-config.log_interval:]):.4f} "
                    f"lr {run.lrs[global_step - 1]:.5f} {rate:.1f} img/s eta {_hms(eta)}")
            (run.logger.bar if run.logger.tty and step != steps else run.log)(line)
            tick, seen = time.time(), 0
    if not losses:
        raise DataError("the training pipeline yielded no batches; check the dataset")
    return {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
            "lr": float(run.lrs[(epoch + 1) * steps - 1]), "epoch_seconds": time.time() - epoch_start}


def _train_steps(run: Run, dataset, seed: int):
    """(step, images, loss) per step; with a data sink, the whole epoch as one device call. The
    epoch's augmentation seed holds while it runs (the training run's to set, see `seeded`)."""
    if run.config.dataset_sink:  # its loss is the last step's
        with explained_pipeline_errors(), seeded(seed):
            loss = ms.data_sink(run.train_net, dataset, sink_size=run.steps)()
        yield run.steps, run.steps * run.config.batch_size, loss
        return
    with explained_pipeline_errors(), seeded(seed):
        for step, (images, labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1), start=1):
            yield step, len(labels), run.train_net(images, labels)


def evaluate_run(run: Run, epoch: int) -> dict:
    """Top-1, top-5 and loss over every validation sample (the ranks' shards summed); with EMA,
    also the averaged weights' (`ema_top1`, ...)."""
    final = _score(run, f"epoch {epoch}: val")
    pairs = ema_parameters(run.train_net)
    if pairs:
        with swapped(pairs):
            averaged = _score(run, f"epoch {epoch}: EMA val")
        final.update({f"ema_{key}": value for key, value in averaged.items() if key != "samples"})
    return final


def _score(run: Run, label: str) -> dict:
    dataset, _ = create_dataset(run.val_source, run.val_spec)
    with explained_pipeline_errors():
        scores = evaluate(from_network(run.net, run.description), dataset,
                          all_reduce_sum if run.ranks.size > 1 else None)
    run.log(f"{label} top-1 {scores['top1']:.4f} top-5 {scores['top5']:.4f} "
            f"loss {scores['loss']:.4f} ({scores['samples']} samples)")
    return scores


def recalibrate(run: Run) -> dict:
    """Megvii's last step: BatchNorm statistics re-estimated on `bn_recalibrate` training
    batches (unmixed, augmented), for the weights and their EMA; then the final scores."""
    spec = dataclasses.replace(run.train_spec, mixup=0.0, cutmix=0.0)
    pairs = ema_parameters(run.train_net)
    for which, swap in [("weights", [])] + ([("EMA", pairs)] if pairs else []):
        dataset, info = create_dataset(run.train_source, spec, run.config.epochs)
        with swapped(swap), explained_pipeline_errors(), seeded(info.seed):
            used = recalibrate_batchnorm(run.net, dataset.create_tuple_iterator(num_epochs=1),
                                         run.config.bn_recalibrate)
        run.log(f"BatchNorm statistics of the {which} re-estimated on {used} training batches")
    return evaluate_run(run, run.config.epochs)


def save_epoch(run: Run, epoch: int) -> None:
    """The epoch's checkpoint (weights, optimizer state, epoch), written before evaluation so a
    failure there loses nothing; the oldest beyond `keep_checkpoints` are removed."""
    meta = checkpoint_extra(run.description.to_json(), epoch=epoch)
    save_checkpoint(run.train_net, checkpoint_path(run.out, epoch), meta)
    for old in epoch_checkpoints(run.out)[:-run.config.keep_checkpoints]:
        old.unlink()


def record_epoch(run: Run, epoch: int, row: dict) -> None:
    """best.ckpt when the epoch's top-1 (of the weights or their EMA, whichever is higher)
    beats every earlier one, and the epoch's metrics row. The checkpoint's "weights" says which."""
    scores = {RAW_WEIGHTS: row.get("val_top1"), EMA_WEIGHTS: row.get("val_ema_top1")}
    which = max((k for k in scores if scores[k] is not None), key=scores.get, default=None)
    if which is not None and scores[which] > run.best_top1:
        run.best_top1 = scores[which]
        meta = checkpoint_extra(run.description.to_json(), epoch=epoch, top1=scores[which], weights=which)
        with swapped(ema_parameters(run.train_net) if which == EMA_WEIGHTS else []):
            save_checkpoint(run.net, run.out / BEST_CHECKPOINT, meta)
    _append_csv(run.out / METRICS_FILE, row)


def best_score(output_dir: Path) -> float:
    """Top-1 of the run's best.ckpt so far (-1 without one), so a resumed run keeps the best."""
    best = output_dir / BEST_CHECKPOINT
    return float(scalar(read_checkpoint(best), TOP1_KEY, -1.0)) if best.is_file() else -1.0


def finish(run: Run, final: dict) -> dict:
    """final.ckpt (and final_ema.ckpt), eval.json, curves.png and (unless disabled) a verified
    MINDIR of whichever of the weights and their EMA scored higher."""
    out, config = run.out, run.config
    result = {"model": config.model, **final}
    description = run.description.to_json()
    save_checkpoint(run.net, out / FINAL_CHECKPOINT,
                    checkpoint_extra(description, epoch=config.epochs, weights=RAW_WEIGHTS))
    pairs = ema_parameters(run.train_net)
    if pairs:
        with swapped(pairs):
            save_checkpoint(run.net, out / FINAL_EMA_CHECKPOINT,
                            checkpoint_extra(description, epoch=config.epochs, weights=EMA_WEIGHTS))
    write_text(out / EVAL_FILE, json.dumps(result, indent=1) + "\n")
    _plot(out / METRICS_FILE, out / CURVES_FILE)
    names = (FINAL_CHECKPOINT, FINAL_EMA_CHECKPOINT, BEST_CHECKPOINT, EVAL_FILE, METRICS_FILE, CURVES_FILE)
    written = [out / name for name in names]
    if config.export:
        from ..export import DYNAMIC_BATCH, export_model

        ema_won = final.get("ema_top1", -1.0) > final["top1"]
        with swapped(pairs if ema_won else []):
            written.append(export_model(run.net, "MINDIR", out / EXPORT_FILE, DYNAMIC_BATCH, run.description))
        if pairs:
            run.log(f"exported the {'EMA' if ema_won else 'raw'} weights (the higher final top-1)")
    run.log("wrote " + ", ".join(str(p) for p in written if p.exists()))
    return result


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


def _restore(run: Run, params: dict, path: Path) -> int:
    """Network weights and the train step's state (optimizer buffers, EMA, accumulated
    gradients, dynamic loss scale) from `params`; the schedule is the current one.

    The learning-rate array and step counter are derived from the configuration, not loaded:
    training continues at the first step of the saved epoch, so a resumed run may change the
    batch size, device count or schedule.
    """
    described = read_description(params, str(path))
    if described and described.model != run.config.model:
        raise CheckpointError(
            f"{path} was trained as {described.model}, not {run.config.model}; pass --model "
            f"{described.model} or another checkpoint")
    _refuse_without_optimizer_state(run, params, path, described)
    epoch = int(scalar(params, EPOCH_KEY, 0))
    if epoch > run.config.epochs:
        raise CheckpointError(f"{path} is from epoch {epoch}, beyond --epochs {run.config.epochs}")
    load_weights(list(run.net.get_parameters()) + run.train_net.state_parameters(), params, source=str(path))
    updates = epoch * run.steps // run.config.gradient_accumulation_steps
    run.optimizer.global_step.set_data(ms.Tensor([updates], ms.int32))
    return epoch


def _refuse_without_optimizer_state(run: Run, params: dict, path: Path,
                                    described: Optional[ModelDescription]) -> None:
    """--resume continues a run of this project from its weights, training state and epoch; a
    foreign checkpoint (mindcv's, even with its own optimizer state) or a weights-only file
    (final.ckpt, best.ckpt) cannot be continued, and says so rather than listing missing keys."""
    missing = [p.name for p in run.train_net.state_parameters() if p.name not in params]
    if not missing:
        return
    from ..lineages import identify

    lineage = identify(params) if described is None else None
    if lineage is None and any(key.startswith(STATE_PREFIXES) for key in params):
        return  # state of this project's run that does not fit (another --opt): load_weights lists it
    if lineage is not None:
        holds = f"{lineage.origin} weights, not a training run of this project"
    elif described is not None:
        holds = "this project's weights only (as final.ckpt and best.ckpt do)"
    else:
        holds = "weights of unknown origin"
    raise CheckpointError(
        f"{path} holds {holds}: it lacks this project's optimizer state ({len(missing)} "
        f"entries, e.g. {missing[0]}), so --resume cannot continue it; start from its weights "
        f"with --pretrained {path} instead")


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
    """Add the epoch's row (replacing rows of that epoch or later, left by a killed run)."""
    columns = ["epoch", "train_loss", "lr", "epoch_seconds", "val_top1", "val_top5", "val_loss",
               "val_ema_top1", "val_ema_top5", "val_ema_loss"]
    rows = []
    if path.exists():
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < row["epoch"]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([*rows, row])
    write_text(path, buffer.getvalue())


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
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

