"""Model definitions and the registry that names them."""
from . import shufflenet_v1  # noqa: F401  (registers the ShuffleNetV1 family)
from .layers import GroupConv, channel_shuffle
from .registry import create_model, list_models, model_arch, model_options
from .shufflenet_v1 import ShuffleNetV1, ShuffleV1Block, stage_channels

__all__ = [
    "GroupConv", "ShuffleNetV1", "ShuffleV1Block", "channel_shuffle", "create_model",
    "list_models", "model_arch", "model_options", "stage_channels",
]
