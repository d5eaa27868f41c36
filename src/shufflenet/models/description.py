"""What a trained model is, in one frozen record: the registry's `Weights.meta`/`pretrained_cfg`.

A `ModelDescription` names the registered model, its class count and names, the network options
it was built with, the input convention and the input size. Training writes it into every
checkpoint, export copies it into every sidecar, and every command that loads a model reads it
from there instead of re-deriving any part of it.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.presets import Preprocessing, get_preprocessing

#: Checkpoint entry holding the JSON of a `ModelDescription`.
META_KEY = "shufflenet_meta"


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
        classes = self.num_classes
        if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise ValueError(f"image_size must be an integer of at least 32, got {self.image_size!r}")
        get_preprocessing(self.preprocessing)
        names = tuple(str(n) for n in self.class_names) or tuple(str(i) for i in range(self.num_classes))
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names given for a {self.num_classes}-class model")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "options", dict(self.options))

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
    def from_dict(cls, data: Mapping[str, Any], source: str = "the model file") -> ModelDescription:
        """Read back `to_dict()` (also a sidecar, which holds these keys among others)."""
        known = {f.name for f in dataclasses.fields(cls)}
        missing = sorted({"model", "num_classes", "image_size", "preprocessing"} - set(data))
        if missing:
            raise ValueError(f"{source} records no {', '.join(missing)}; re-export or re-save it")
        try:
            return cls(**{key: data[key] for key in known if key in data})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source} has an invalid model description: {err}") from None


def read_description(params: Mapping[str, Any], source: str = "the checkpoint") -> ModelDescription | None:
    """The description stored in a checkpoint's entries, or None (foreign checkpoints)."""
    raw = params.get(META_KEY)
    if not isinstance(raw, str):
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} has a damaged model description ({err})") from None
    return ModelDescription.from_dict(data, source)
