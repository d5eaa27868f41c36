"""What a trained model is, in one frozen record: the registry's `Weights.meta`/`pretrained_cfg`.

A `ModelDescription` names the registered model, its class count and names, the network options
it was built with, the input convention and the input size. Training writes it into every
checkpoint, export copies it into every sidecar, and every command that loads a model reads it
from there instead of re-deriving any part of it.

A description read from a file is untrusted: every number and string in it is bounded here,
before anything is built from it (a 1 KB file claiming 10**9 classes must fail in microseconds,
not after allocating the names), and class names may not carry terminal control sequences.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.presets import Preprocessing, get_preprocessing
from ..utils.checkpoint_schema import META_KEY

#: Most classes a description may claim: over twice ImageNet-21k's 21,841.
MAX_CLASSES = 50_000
#: Longest class name, in characters (ImageNet's longest synset names have about 120).
MAX_CLASS_NAME = 200
#: Input side bounds: the smallest the networks accept, and 4.5x ImageNet's 224 (one
#: preprocessed 1024 px image is 12 MB of float32; larger would be an allocation, not a model).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024
#: Most input channels (`in_channels`): RGB, RGBA, or a multispectral stack such as
#: Sentinel-2's 13 bands.
MAX_IN_CHANNELS = 16
#: Bounds on the other network options and names (model, preprocessing, option keys/values).
MAX_OPTIONS, MAX_NAME, MAX_OPTION_INT = 32, 64, 4096
#: Largest description or sidecar JSON read (bytes): 50,000 names of 200 characters, even
#: written as \uXXXX escapes, fit; anything larger is not metadata this project wrote.
MAX_METADATA_BYTES = 64 * 2**20
#: Deepest JSON nesting read from any file (descriptions and sidecars need 3, safetensors 3).
MAX_JSON_DEPTH = 16
#: Characters a name read from a file may not hold: C0/C1 controls (ESC starts terminal
#: sequences), line and paragraph separators, and bidirectional overrides (text shown reordered).
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: A JSON string (escapes included), removed before brackets are counted.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def printable(text: str, limit: int = 80) -> str:
    """`text` safe to print on a terminal: unsafe characters as escapes, long text shortened."""
    text = str(text)
    shortened = text[:limit] + ("..." if len(text) > limit else "")
    return UNSAFE_CHARS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), shortened)


def _shown(value: Any) -> str:
    """A value quoted in an error message: repr (which escapes controls), shortened."""
    text = repr(value) if not isinstance(value, (list, dict, tuple)) else type(value).__name__
    return printable(text, 60)


def json_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply `data` nests arrays and objects, counted without parsing (no recursion, 1 MiB
    at a time); counting stops once past `limit`."""
    codes = np.frombuffer(_JSON_STRING.sub(b'""', data), np.uint8)
    depth = deepest = 0
    for start in range(0, len(codes), 2**20):
        chunk = codes[start:start + 2**20]
        steps = np.isin(chunk, (91, 123)).astype(np.int64) - np.isin(chunk, (93, 125))
        levels = depth + np.cumsum(steps)
        if len(levels):
            deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        if deepest > limit:
            break
    return deepest


def parse_json(data: bytes | str, source: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON read from a file, its nesting bounded before parsing; a ValueError naming `source`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    depth = json_depth(raw, max_depth)
    if depth > max_depth:
        raise ValueError(f"{source}: its {what} nests deeper than {max_depth} levels; it is not a "
                         "file this project or its publishers write, so it is refused")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise ValueError(f"{source} has a damaged {what} ({printable(err, 120)})") from None


@dataclass(frozen=True)
class ModelDescription:
    """Everything needed to rebuild, feed and label a model without further flags.

    `shufflenet.models.registry.describe` fills the input size and convention from the
    model's registered defaults; nothing else supplies a fallback.
    """

    model: str
    num_classes: int
    image_size: int
    preprocessing: str  # a name in `shufflenet.data.presets.PRESETS`
    options: Mapping[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        _check_int("image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        _check_name("model", self.model)
        _check_name("preprocessing", self.preprocessing)
        get_preprocessing(self.preprocessing)
        object.__setattr__(self, "options", check_options(self.options))
        object.__setattr__(self, "class_names", check_class_names(self.class_names, self.num_classes))

    @property
    def preset(self) -> Preprocessing:
        return get_preprocessing(self.preprocessing)

    def replace(self, **changes: Any) -> ModelDescription:
        """A copy with `changes`; a new class count without names gets numbered names."""
        if "num_classes" in changes and "class_names" not in changes:
            changes["class_names"] = ()
        if "options" in changes:
            changes["options"] = {**self.options, **changes["options"]}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "num_classes": self.num_classes, "options": dict(self.options),
                "preprocessing": self.preprocessing, "class_names": list(self.class_names),
                "image_size": self.image_size}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "the model file") -> ModelDescription:
        """Read back `to_dict()` (also a sidecar, which holds these keys among others)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: its model description is not a JSON object; re-export or re-save it")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = sorted({"model", "num_classes", "image_size", "preprocessing"} - set(data))
        if missing:
            raise ValueError(f"{source} records no {', '.join(missing)}; re-export or re-save it")
        try:
            return cls(**{key: data[key] for key in known if key in data})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source} has an invalid model description: {err}; re-export or re-save "
                             "it with this project") from None


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        kind = "a positive integer" if low == 1 else f"an integer of at least {low}"
        raise ValueError(f"{name} must be {kind}, at most {high}; got {_shown(value)}")


def _check_name(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{name} must be a name of at most {MAX_NAME} letters, digits and _.-, "
                         f"got {_shown(value)}")


def check_options(options: Any) -> dict[str, Any]:
    """Network options as a dict of bounded scalars: each becomes a constructor argument, so a
    huge `in_channels` would be a huge first convolution."""
    if not isinstance(options, Mapping) or len(options) > MAX_OPTIONS:
        raise ValueError(f"options must be a mapping of at most {MAX_OPTIONS} entries, got {_shown(options)}")
    for key, value in options.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise ValueError(f"options: {_shown(key)} is not an option name")
        if key == "in_channels":
            _check_int("options.in_channels", value, 1, MAX_IN_CHANNELS)
        elif isinstance(value, int) and not isinstance(value, bool):
            _check_int(f"options.{key}", value, -MAX_OPTION_INT, MAX_OPTION_INT)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"options.{key} must be finite, got {value}")
        elif isinstance(value, str) and (len(value) > MAX_NAME or UNSAFE_CHARS.search(value)):
            raise ValueError(f"options.{key} must be at most {MAX_NAME} printable characters, "
                             f"got {_shown(value)}")
        elif not isinstance(value, (bool, int, float, str, type(None))):
            raise ValueError(f"options.{key} must be a number, a string or a boolean, got {_shown(value)}")
    return dict(options)


def check_class_names(names: Any, num_classes: int) -> tuple[str, ...]:
    """One name per class (numbered when none are given), each short and printable; the count
    is checked first, so nothing is built for a file that lies about it."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValueError(f"class_names must be a list of names, got {_shown(names)}")
    if not names:
        return tuple(str(i) for i in range(num_classes))
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for a {num_classes}-class model")
    for index, name in enumerate(names):
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise ValueError(f"class_names[{index}] must be a string, got {_shown(name)}")
        name = str(name)
        if len(name) > MAX_CLASS_NAME:
            raise ValueError(f"class_names[{index}] has {len(name)} characters, more than "
                             f"{MAX_CLASS_NAME}: {printable(name, 40)}")
        if UNSAFE_CHARS.search(name):
            raise ValueError(f"class_names[{index}] holds control characters (they would rewrite "
                             f"what a terminal shows): {printable(name, 60)}")
    return tuple(str(name) for name in names)


def read_description(params: Mapping[str, Any], source: str = "the checkpoint") -> ModelDescription | None:
    """The description stored in a checkpoint's entries, or None (foreign checkpoints)."""
    raw = params.get(META_KEY)
    if not isinstance(raw, str):
        return None
    if len(raw) > MAX_METADATA_BYTES:
        raise ValueError(f"{source}: its model description ({META_KEY}) has {len(raw)} characters, "
                         f"more than the {MAX_METADATA_BYTES} a description may have; re-save it")
    return ModelDescription.from_dict(parse_json(raw, source, "model description"), source)
