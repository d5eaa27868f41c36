"""ShuffleNetV1 (Zhang et al., 2017) for MindSpore on Ascend, GPU and CPU."""
from .models import (
    GroupConv,
    ShuffleNetV1,
    channel_shuffle,
    create_model,
    list_models,
    model_options,
)
from .version import __version__

__all__ = [
    "GroupConv", "ShuffleNetV1", "channel_shuffle", "create_model", "list_models",
    "model_options", "__version__",
]
