"""Model definitions, the registry that names them and the description that travels with them."""
from . import (  # noqa: F401  (each registers its family)
    mobilenet_v1,
    mobilenet_v2,
    shufflenet_v1,
    shufflenet_v2,
    shufflenet_v2_plus,
    squeezenet,
    xception,
)
from .description import META_KEY, ModelDescription, read_description
from .layers import GroupConv, channel_shuffle
from .registry import (
    classes_in,
    create_model,
    describe,
    family_of,
    head_prefix,
    list_families,
    list_models,
    model_arch,
    model_entry,
    model_options,
    option_table,
    recognise,
)
from .shufflenet_v1 import ShuffleNetV1, ShuffleV1Block, stage_channels

__all__ = [
    "META_KEY", "GroupConv", "ModelDescription", "ShuffleNetV1", "ShuffleV1Block", "channel_shuffle",
    "classes_in", "create_model", "describe", "family_of", "head_prefix", "list_families", "list_models",
    "model_arch", "model_entry", "model_options", "option_table", "read_description", "recognise",
    "stage_channels",
]
