"""ShuffleNet and its neighbours for MindSpore on Ascend, GPU and CPU: ShuffleNetV1, ShuffleNetV2
and V2+, MobileNetV1 and V2, SqueezeNet and Xception, from one registry (`list_families`,
`list_models`, `create_model`), with every publisher's weights by name (`create_model(name,
pretrained=True | "TAG")`, `weight_table`) and importable from a file (`shufflenet convert`)."""
from .models import (
    GroupConv,
    ModelDescription,
    ShuffleNetV1,
    channel_shuffle,
    describe,
    list_families,
    list_models,
    model_options,
)
from .pretrained import create_model, fetch_weights, weight_table
from .version import __version__

__all__ = [
    "GroupConv", "ModelDescription", "ShuffleNetV1", "channel_shuffle", "create_model", "describe",
    "fetch_weights", "list_families", "list_models", "model_options", "weight_table", "__version__",
]
