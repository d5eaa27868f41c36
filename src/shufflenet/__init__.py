"""ShuffleNetV1 (Zhang et al., 2017) and the lightweight networks around it (ShuffleNetV2 and
V2+, MobileNetV1/V2, SqueezeNet, Xception) for MindSpore on Ascend, GPU and CPU, with every
publisher's weights by name."""
from .models import (
    GroupConv,
    ShuffleNetV1,
    channel_shuffle,
    list_models,
    model_options,
)
from .pretrained import create_model, fetch_weights, weight_table
from .version import __version__

__all__ = [
    "GroupConv", "ShuffleNetV1", "channel_shuffle", "create_model", "fetch_weights", "list_models",
    "model_options", "weight_table", "__version__",
]
