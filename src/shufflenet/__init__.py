"""ShuffleNet and its neighbours for MindSpore on Ascend, GPU and CPU: ShuffleNetV1, ShuffleNetV2
and V2+, MobileNetV1 and V2, SqueezeNet and Xception, from one registry (`list_families`,
`list_models`, `create_model`), with the published weights of Megvii, torchvision, timm, mindcv
and the MindSpore tutorial and zoo importable (`shufflenet convert`)."""
from .models import (
    GroupConv,
    ModelDescription,
    ShuffleNetV1,
    channel_shuffle,
    create_model,
    describe,
    list_families,
    list_models,
    model_options,
)
from .version import __version__

__all__ = [
    "GroupConv", "ModelDescription", "ShuffleNetV1", "channel_shuffle", "create_model", "describe",
    "list_families", "list_models", "model_options", "__version__",
]
