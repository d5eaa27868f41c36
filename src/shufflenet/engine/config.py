"""Run configuration: one dataclass declares every key, its default, type, choices and help.

Precedence: dataclass defaults < the recipe YAML (`--config`) < command-line flags. Unknown YAML
keys are an error, and the resolved configuration is written next to the outputs. The flags are
generated from the dataclass (`shufflenet.cli.common`), so a new key is declared only once.
Network options (`pool_padding`, ...) come from the model registry's option table: in YAML as
top-level keys or under `model_options`, on the command line as `--pool-padding` etc.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Optional, get_type_hints

import yaml

from ..data import PipelineSpec
from ..data.augment import AUTO_AUGMENT_POLICIES
from ..data.presets import PRESETS
from ..data.sources import DATASETS
from ..kernels.cells import CPU_KERNEL_MODES
from ..models import option_table
from ..utils.files import write_text
from .optim import OPTIMIZERS
from .schedule import SCHEDULERS

DEFAULT_RECIPE = "digits_cpu"
DEVICES = ("CPU", "GPU", "Ascend")
AMP_LEVELS = ("auto", "O0", "O1", "O2", "O3")
LOSS_SCALE_TYPES = ("fixed", "dynamic")
#: `Config` keys that are also fields of the training pipeline's `PipelineSpec`.
TRAIN_PIPELINE_KEYS = ("auto_augment", "re_prob", "aug_repeats", "mixup", "cutmix", "cutmix_prob",
                       "mixup_switch_prob", "label_smoothing")
#: Prefix of the argparse destinations of network-option flags.
OPTION_DEST = "model_option:"


@dataclass
class Config:
    # model
    model: str = field(default="shufflenet_v1_g3_x0_5", metadata={"help": "registered model name"})
    model_options: dict = field(default_factory=dict, metadata={
        "help": "network options (the model's default where absent)", "flag": False})
    pretrained: Optional[str] = field(
        default=None, metadata={"help": "checkpoint to start from, or a tag of the model's published "
                                        "weights (torchvision, timm, mindcv, zoo, default; see "
                                        "`shufflenet weights`); a differing classifier is reset"})
    weights_table: Optional[str] = field(default=None, metadata={
        "help": "YAML file of your own weight entries for --pretrained TAG "
                "(default: $SHUFFLENET_WEIGHTS_FILE)"})
    # data
    dataset: str = field(default="auto", metadata={
        "help": "dataset kind (auto: from --data-path)", "choices": DATASETS})
    data_path: Optional[str] = field(
        default=None, metadata={"help": "dataset folder; none: scikit-learn's bundled digits"})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "input side (default: the model's recorded size, else the dataset's)"})
    preprocessing: Optional[str] = field(default=None, metadata={
        "help": "input convention (default: the model's recorded one, else the dataset's)",
        "choices": tuple(PRESETS)})
    num_workers: int = field(default=2, metadata={"help": "pipeline workers per device"})
    augment: bool = field(default=True, metadata={"help": "random crops, flips and colour jitter"})
    skip_bad_images: bool = field(
        default=False, metadata={"help": "skip undecodable images and report them instead of stopping"})
    auto_augment: Optional[str] = field(default=None, metadata={
        "help": "policy after the crop and flip, instead of colour jitter: "
                f"{', '.join(AUTO_AUGMENT_POLICIES)} or a timm-style spec (randaug-m9-n2)"})
    re_prob: float = field(default=0.0, metadata={"help": "random erasing probability per image"})
    aug_repeats: int = field(
        default=0, metadata={"help": "repeated augmentation: each image N times per epoch (0, 1: off)"})
    mixup: float = field(default=0.0, metadata={"help": "mixup Beta(alpha, alpha); 0: off"})
    cutmix: float = field(default=0.0, metadata={"help": "cutmix Beta(alpha, alpha); 0: off"})
    cutmix_prob: float = field(default=1.0, metadata={"help": "probability that a batch is mixed"})
    mixup_switch_prob: float = field(
        default=0.5, metadata={"help": "probability of cutmix rather than mixup when both are on"})
    # optimisation
    epochs: int = field(default=10, metadata={"help": "training epochs"})
    batch_size: int = field(default=32, metadata={"help": "batch size per device"})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate, for the global batch"})
    min_lr: float = field(default=0.0, metadata={"help": "learning rate at the end of the cosine"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up epochs"})
    scheduler: str = field(default="cosine", metadata={
        "help": "decay after the warm-up", "choices": SCHEDULERS})
    decay_epochs: float = field(default=30.0, metadata={"help": "step scheduler: epochs per decay"})
    decay_rate: float = field(default=0.1, metadata={
        "help": "step/multistep: factor per decay; polynomial: the power"})
    milestones: list = field(default_factory=list, metadata={
        "help": "multistep scheduler: epochs (after the warm-up) where lr *= decay_rate"})
    opt: str = field(default="momentum", metadata={"help": "optimizer", "choices": OPTIMIZERS})
    momentum: float = field(default=0.9, metadata={"help": "momentum (momentum, nesterov, sgd, rmsprop)"})
    eps: Optional[float] = field(default=None, metadata={
        "help": "adamw/rmsprop/lamb epsilon (default: 1e-8, 1e-10, 1e-6)"})
    weight_decay: float = field(
        default=4e-5, metadata={"help": "L2 on conv and dense weights (never BatchNorm or bias)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    loss_scale: float = field(default=1.0, metadata={"help": "loss scale (dynamic: its start; 1: none)"})
    loss_scale_type: str = field(default="fixed", metadata={
        "help": "dynamic: halve on overflow and skip that update, double after 2000 clean steps",
        "choices": LOSS_SCALE_TYPES})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "micro-batches per optimizer update"})
    clip_grad: bool = field(default=False, metadata={"help": "clip gradients by global norm"})
    clip_value: float = field(default=15.0, metadata={"help": "the global norm clip_grad clips to"})
    ema: bool = field(default=False, metadata={
        "help": "keep an exponential moving average of the weights, evaluated beside them"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay (mindcv's warm-up applies)"})
    bn_recalibrate: int = field(default=0, metadata={
        "help": "after training, re-estimate BatchNorm statistics on N training batches (0: off)"})
    amp_level: str = field(default="auto", metadata={
        "help": "mixed precision; auto: O3 on Ascend, O2 on GPU, O0 (fp32) on CPU", "choices": AMP_LEVELS})
    cpu_kernels: str = field(default="auto", metadata={
        "help": "this project's C++ depthwise-conv and max-pool kernels for fp32 training on CPU, "
                "built with g++ on first use; auto: when they build, on: required, off: never",
        "choices": CPU_KERNEL_MODES})
    # run
    device_target: str = field(default="CPU", metadata={"help": "MindSpore backend", "choices": DEVICES})
    distributed: bool = field(default=False, metadata={"help": "data-parallel over all launched ranks"})
    dataset_sink: bool = field(
        default=False, metadata={"help": "feed each epoch to the device in one call (Ascend, GPU)"})
    seed: int = field(default=0, metadata={"help": "seed of weights, shuffling and augmentation"})
    output_dir: str = field(default="outputs/run", metadata={"help": "where everything is written"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace the outputs of an earlier run in output_dir"})
    resume: Optional[str] = field(
        default=None, metadata={"help": "checkpoint to continue from, or 'auto': newest in output_dir"})
    eval_interval: int = field(default=1, metadata={"help": "evaluate every N epochs (0: only at end)"})
    keep_checkpoints: int = field(default=3, metadata={"help": "epoch checkpoints kept (newest)"})
    log_interval: int = field(default=20, metadata={"help": "steps between progress lines"})
    export: bool = field(default=True, metadata={"help": "export a MINDIR of the final model"})
    # Huawei ModelArts (as in the model zoo)
    enable_modelarts: bool = field(
        default=False, metadata={"help": "copy inputs from OBS to cache_dir and outputs back"})
    data_url: Optional[str] = field(default=None, metadata={"help": "OBS dataset folder"})
    train_url: Optional[str] = field(default=None, metadata={"help": "OBS folder for the outputs"})
    checkpoint_url: Optional[str] = field(
        default=None, metadata={"help": "OBS checkpoint to start from (as --pretrained)"})
    checkpoint_sha256: Optional[str] = field(
        default=None, metadata={"help": "expected SHA-256 of checkpoint_url's file, checked after the copy"})
    cache_dir: str = field(default="/cache", metadata={"help": "local copy of the OBS inputs"})
    sync_timeout: float = field(
        default=3600.0, metadata={"help": "seconds a rank waits for its node's input copy"})


def recipe_path(name_or_path: str) -> Path:
    """A packaged recipe name (`digits_cpu`) or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        return path
    packaged = resources.files("shufflenet") / "configs" / f"{name_or_path}.yaml"
    if not packaged.is_file():
        raise ValueError(
            f"unknown recipe {name_or_path!r}; packaged recipes: {', '.join(list_recipes())}, "
            "or pass a path to a YAML file"
        )
    return Path(str(packaged))


def list_recipes() -> list[str]:
    folder = resources.files("shufflenet") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_yaml(path: Path) -> dict[str, Any]:
    """A recipe's keys; network options may stand at the top level (moved into model_options)."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} is not valid UTF-8 YAML: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must be a mapping of keys to values")
    options = option_table()
    known = {f.name for f in fields(Config)} | set(options)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config file {path} has unknown key(s) {unknown}; valid keys: {sorted(known)}")
    nested = values.get("model_options") or {}
    if not isinstance(nested, dict):
        raise ValueError(f"config file {path}: model_options must be a mapping")
    flat = {key: values.pop(key) for key in list(values) if key in options}
    values["model_options"] = {**nested, **flat}
    return values


def resolve_config(args: argparse.Namespace) -> Config:
    """Defaults, then the recipe, then the flags that were given; values are checked."""
    values = load_yaml(recipe_path(args.config))
    given = {k: v for k, v in vars(args).items() if k != "config"}
    flagged = {k[len(OPTION_DEST):]: given.pop(k) for k in list(given) if k.startswith(OPTION_DEST)}
    values.update(given)
    values["model_options"] = {**values.get("model_options", {}), **flagged}
    hints = get_type_hints(Config)
    for key, value in values.items():
        values[key] = _coerce(key, value, base_type(hints[key]))
    options = option_table()
    for key, value in values["model_options"].items():
        if key not in options:
            raise ValueError(f"unknown network option {key!r}; valid: {', '.join(sorted(options))}")
        _coerce(key, value, options[key].kind)
    config = Config(**values)
    validate(config)
    return config


def validate(config: Config) -> None:
    positive = ("epochs", "batch_size", "keep_checkpoints", "log_interval")
    for key in positive:
        if getattr(config, key) < 1:
            raise ValueError(f"{key} must be at least 1, got {getattr(config, key)}")
    if not (math.isfinite(config.lr) and math.isfinite(config.min_lr)):
        raise ValueError(f"lr and min_lr must be finite numbers, got lr={config.lr} min_lr={config.min_lr}")
    if config.lr <= 0 or config.min_lr < 0 or config.min_lr > config.lr:
        raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={config.lr} min_lr={config.min_lr}")
    if not 0 <= config.warmup_epochs <= config.epochs:
        raise ValueError(f"warmup_epochs must be in [0, epochs], got {config.warmup_epochs}")
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.loss_scale < 1:
        raise ValueError(f"loss_scale must be at least 1, got {config.loss_scale}")
    for f in fields(Config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value is not None and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
    if config.dataset_sink and config.device_target == "CPU":
        raise ValueError("dataset_sink needs Ascend or GPU: MindSpore has no data sink on CPU; "
                         "pass --dataset-sink false")
    if config.eval_interval < 0:
        raise ValueError(f"eval_interval must be >= 0, got {config.eval_interval}")
    _validate_training_features(config)


def _validate_training_features(config: Config) -> None:
    features = {key: getattr(config, key) for key in TRAIN_PIPELINE_KEYS}
    PipelineSpec(True, config.batch_size, num_classes=2, **features)  # its checks; classes come later
    if config.gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be at least 1, got "
                         f"{config.gradient_accumulation_steps}")
    if config.clip_value <= 0:
        raise ValueError(f"clip_value must be positive, got {config.clip_value}")
    if not 0 < config.ema_decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {config.ema_decay}")
    if config.bn_recalibrate < 0:
        raise ValueError(f"bn_recalibrate must be >= 0 (batches), got {config.bn_recalibrate}")
    if config.decay_epochs <= 0 or config.decay_rate <= 0:
        raise ValueError(f"decay_epochs and decay_rate must be positive, got {config.decay_epochs}, "
                         f"{config.decay_rate}")
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in config.milestones):
        raise ValueError(f"milestones must be epochs (integers >= 0), got {config.milestones}")
    if config.eps is not None and config.eps <= 0:
        raise ValueError(f"eps must be positive, got {config.eps}")


def save_config(config: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def base_type(hint: Any) -> type:
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    return args[0] if args else hint


def _coerce(key: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads `1e-2` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"config key {key!r} must be {kind.__name__}, got {value!r}")
    return value
