"""A strict name -> model registry: duplicates are refused, unknown names and options explained.

Each family registers itself once (`register_family`: its network options with their types and
choices, and how to recognise its checkpoints from their shapes) and then its models
(`register_model`: the builder, the fixed architecture arguments and the default input).
Commands generate their flags from these tables and fill every default from them.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mindspore import nn

from .description import ModelDescription, read_description
from .features import FeatureExtractor, FeatureSpec, check_out_indices

#: Input side and convention of a model that registers no other (ImageNet-style training).
DEFAULT_IMAGE_SIZE = 224
DEFAULT_PREPROCESSING = "imagenet"


@dataclass(frozen=True)
class ModelOption:
    """A network option of `create_model` as commands expose it (`--pool-padding`, ...)."""

    kind: type
    help: str
    choices: Optional[tuple] = None


#: Shapes of a checkpoint's entries -> (model name, description fields) or None if not this family.
Recogniser = Callable[[Mapping[str, tuple]], Optional[tuple[str, dict[str, Any]]]]


@dataclass(frozen=True)
class Family:
    name: str
    options: Mapping[str, ModelOption]
    recognise: Recogniser
    #: A built network's architecture in a few words, for `shufflenet summary`.
    arch_text: Callable[[nn.Cell], str]
    #: Options of the network whose figures are published (e.g. Megvii's bias-free classifier),
    #: which `shufflenet summary` measures.
    published_options: Mapping[str, Any] = field(default_factory=dict)
    #: The attribute of the cell that gives the logits: what fine-tuning re-initialises and
    #: where a checkpoint's class count is read (`head_prefix`, `classes_in`).
    head: str = "classifier"
    #: Its body and tap points as a backbone (`features_only`).
    features: Optional[FeatureSpec] = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Cell]
    arch: Mapping[str, Any] = field(default_factory=dict)
    image_size: int = DEFAULT_IMAGE_SIZE
    preprocessing: str = DEFAULT_PREPROCESSING
    #: Published multiply-adds at the default input, in millions, and who published them.
    published_mflops: Optional[tuple[float, str]] = None


_FAMILIES: dict[str, Family] = {}
_MODELS: dict[str, ModelEntry] = {}


def register_family(name: str, options: Mapping[str, ModelOption], recognise: Recogniser,
                    arch_text: Callable[[nn.Cell], str],
                    published_options: Mapping[str, Any] | None = None, head: str = "classifier",
                    features: FeatureSpec | None = None) -> None:
    """Declare a family; an option name shared with another family must mean the same there.
    `head`: the network's attribute holding the classifier (a Dense, or a sequence ending in one);
    `features`: how it runs as a backbone (`create_model(..., features_only=True)`)."""
    if name in _FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    known = option_table()
    for key, spec in options.items():
        if key in known and known[key] != spec:
            raise ValueError(f"option {key!r} of family {name!r} differs from another family's")
    _FAMILIES[name] = Family(name, dict(options), recognise, arch_text, dict(published_options or {}), head,
                             features)


def register_model(name: str, builder: Callable[..., nn.Cell], family: str,
                   image_size: int = DEFAULT_IMAGE_SIZE, preprocessing: str = DEFAULT_PREPROCESSING,
                   published_mflops: Optional[tuple[float, str]] = None, **arch: Any) -> None:
    """Register `builder(**arch, num_classes=..., **options)` under `name`."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    if family not in _FAMILIES:
        raise ValueError(f"register the family {family!r} before its model {name!r}")
    _MODELS[name] = ModelEntry(name, family, builder, dict(arch), image_size, preprocessing,
                               published_mflops)


def list_families() -> list[str]:
    """Names of every registered family, in registration order."""
    return list(_FAMILIES)


def list_models(family: str | None = None) -> list[str]:
    """Names of every registered model (of one family), sorted."""
    return sorted(n for n, e in _MODELS.items() if family is None or e.family == family)


def find_model(family: str, matches: Callable[[Mapping[str, Any]], bool], description: str) -> str:
    """The registered model of `family` whose architecture `matches`; a ValueError saying what
    was looked for (`description`, e.g. the channels read from a checkpoint) if none does."""
    for name in list_models(family):
        if matches(model_arch(name)):
            return name
    raise ValueError(f"{description} match no registered {family} model ({', '.join(list_models(family))})")


def family_of(name: str) -> Family:
    return _FAMILIES[model_entry(name).family]


def head_prefix(name: str) -> str:
    """The parameter-name prefix of model `name`'s classifier (`classifier.`, Xception's `fc.`)."""
    return family_of(name).head + "."


def classes_in(name: str, shapes: Mapping[str, tuple], source: str = "the checkpoint") -> int:
    """The class count of a checkpoint of model `name`: the output rows of its head's first
    weight (a Dense's or a 1x1 convolution's)."""
    prefix = head_prefix(name)
    weights = [key for key in shapes if key.startswith(prefix) and key.endswith("weight")]
    if not weights:
        raise ValueError(f"{source} has no {prefix}*weight entry (the classifier of {name}); "
                         "pass --num-classes")
    return int(shapes[sorted(weights)[0]][0])


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name]


def model_options(name: str) -> list[str]:
    """The options `create_model(name, ...)` accepts besides `num_classes`."""
    entry = model_entry(name)
    params = inspect.signature(entry.builder).parameters
    return [p for p in params if p not in entry.arch and p not in ("self", "num_classes")]


def option_table() -> dict[str, ModelOption]:
    """Every network option of every family, by name."""
    return {key: spec for family in _FAMILIES.values() for key, spec in family.options.items()}


def model_arch(name: str) -> dict[str, Any]:
    """The fixed architecture arguments of a registered model, e.g. groups and width."""
    return dict(model_entry(name).arch)


def create_model(name: str, num_classes: int | None = None, features_only: bool = False,
                 out_indices: tuple[int, ...] | None = None, **options: Any) -> nn.Cell:
    """Build a registered model (`num_classes` default 1000); see `list_models()` for names and
    `model_options()` for options. `features_only`: the backbone instead, returning the maps of
    `out_indices` (default: every tap point of `feature_info(name)`)."""
    _check_options(name, options)
    if features_only:
        check_features_request(name, num_classes, out_indices, options)
        return build_backbone(name, out_indices, **options)
    if out_indices is not None:
        raise ValueError("out_indices selects the maps of a backbone: pass features_only=True with it")
    entry = model_entry(name)
    return entry.builder(**entry.arch, num_classes=1000 if num_classes is None else num_classes, **options)


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {name}; valid options: {model_options(name)}"
        )


def check_features_request(name: str, num_classes: int | None, out_indices: tuple[int, ...] | None,
                           options: Mapping[str, Any]) -> None:
    """Refuse, before any work, a backbone request that makes no sense: a class count or a head
    option (the head is not built), or `out_indices` that name no tap point."""
    _check_options(name, options)
    refused = [key for key in options if key in _feature_spec(name).head_options]
    if num_classes is not None:
        refused.insert(0, "num_classes")
    if refused:
        raise ValueError(f"{', '.join(refused)} shape(s) the classifier, which features_only=True "
                         f"does not build; leave {'it' if len(refused) == 1 else 'them'} out")
    check_out_indices(out_indices, len(feature_info(name)))


def _feature_spec(name: str) -> FeatureSpec:
    spec = family_of(name).features
    if spec is None:
        raise ValueError(f"the {family_of(name).name} family declares no tap points; features_only "
                         f"is not available for {name}")
    return spec


def feature_info(name: str, **options: Any) -> list[dict[str, Any]]:
    """Every tap point of model `name` as a backbone, shallowest first: timm's `feature_info`
    (`module`, `num_chs`, `reduction`); `out_indices` index this list."""
    _check_options(name, options)
    return [tap.to_dict() for tap in _feature_spec(name).taps(model_arch(name))]


def build_backbone(name: str, out_indices: tuple[int, ...] | None = None, **options: Any) -> FeatureExtractor:
    """The backbone of model `name` (options that only shape the head are ignored: a checkpoint's
    description may carry them)."""
    spec = _feature_spec(name)
    entry = model_entry(name)
    body_options = {key: value for key, value in options.items() if key not in spec.head_options}
    return features_of(entry.builder(**entry.arch, num_classes=1, **body_options), name, out_indices)


def features_of(net: nn.Cell, name: str, out_indices: tuple[int, ...] | None = None) -> FeatureExtractor:
    """The backbone cut from a built network of model `name` (sharing its cells and weights)."""
    spec = _feature_spec(name)
    return FeatureExtractor(net, spec.body, spec.taps(model_arch(name)), out_indices)


def describe(name: str, num_classes: int, **fields: Any) -> ModelDescription:
    """A `ModelDescription` of `name`, its input size and convention defaulting to the model's."""
    entry = model_entry(name)
    fields.setdefault("image_size", entry.image_size)
    fields.setdefault("preprocessing", entry.preprocessing)
    unknown = sorted(set(fields.get("options", {})) - set(model_options(name)))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {name}; valid options: {model_options(name)}")
    return ModelDescription(name, num_classes, **fields)


def recognise(shapes: Mapping[str, tuple], source: str = "the checkpoint") -> ModelDescription:
    """The registered model whose parameter names and shapes these are, with its defaults.

    Each family's recogniser looks for its own names; the first that matches decides.
    """
    for family in _FAMILIES.values():
        try:
            found = family.recognise(shapes)
        except ValueError as err:  # the family's names, but no registered model's shapes
            raise ValueError(f"{source}: {err}") from None
        if found is not None:
            name, fields = found
            return describe(name, **fields)
    raise ValueError(
        f"{source} has parameter names of no registered family ({', '.join(_FAMILIES)}); "
        "pass --model, or import the weights with `shufflenet convert`"
    )


def parameter_shapes(params: Mapping[str, Any]) -> dict[str, tuple]:
    """Name -> shape of every tensor entry of a checkpoint."""
    return {key: tuple(value.shape) for key, value in params.items() if hasattr(value, "shape")}


def describe_checkpoint(
    params: Mapping[str, Any],
    model: str | None = None,
    num_classes: int | None = None,
    options: Mapping[str, Any] | None = None,
    source: str = "the checkpoint",
) -> ModelDescription:
    """The checkpoint's description, else recognised from its shapes; arguments override both."""
    description = read_description(params, source)
    if description is None:
        shapes = parameter_shapes(params)
        try:
            description = recognise(shapes, source)
        except ValueError:
            if model is None:
                raise
            description = describe(model, num_classes or classes_in(model, shapes, source))
    changes: dict[str, Any] = {"options": dict(options or {})}
    if model is not None:
        changes["model"] = model
    if num_classes is not None and num_classes != description.num_classes:
        changes["num_classes"] = num_classes
    return description.replace(**changes)


def build_network(description: ModelDescription, **option_overrides: Any) -> nn.Cell:
    """An untrained network as `description` says (its class count and options)."""
    options = {**description.options, **option_overrides}
    return create_model(description.model, num_classes=description.num_classes, **options)


def feature_table_markdown() -> str:
    """The README's table of tap points: per family, each `feature_info` entry (cell, reduction)
    and the channels of its first registered model (channels scale with the width)."""
    lines = ["| Family | Tap points: cell (reduction) | Channels (model) |", "|---|---|---|"]
    for family in _FAMILIES.values():
        if family.features is None:
            continue
        model = next(name for name, entry in _MODELS.items() if entry.family == family.name)
        taps = feature_info(model)
        cells = ", ".join(f"`{tap['module']}` ({tap['reduction']})" for tap in taps)
        channels = ", ".join(str(tap["num_chs"]) for tap in taps)
        lines.append(f"| {family.name} | {cells} | {channels} (`{model}`) |")
    return "\n".join(lines)
