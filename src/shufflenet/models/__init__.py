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
from .features import FeatureExtractor, FeatureSpec, FeatureTap, check_out_indices
from .layers import GroupConv, channel_shuffle
from .registry import (
    build_backbone,
    build_network,
    check_features_request,
    classes_in,
    create_model,
    describe,
    describe_checkpoint,
    family_of,
    feature_info,
    features_of,
    head_prefix,
    list_families,
    list_models,
    model_arch,
    model_entry,
    model_options,
    option_table,
    parameter_shapes,
    recognise,
)
from .shufflenet_v1 import ShuffleNetV1, ShuffleV1Block, stage_channels

__all__ = [
    "FeatureExtractor", "FeatureSpec", "FeatureTap", "GroupConv", "META_KEY", "ModelDescription",
    "ShuffleNetV1", "ShuffleV1Block", "build_backbone", "build_network", "channel_shuffle",
    "check_features_request", "check_out_indices", "classes_in", "create_model", "describe",
    "describe_checkpoint", "family_of", "feature_info", "features_of", "head_prefix", "list_families",
    "list_models", "model_arch", "model_entry", "model_options", "option_table", "parameter_shapes",
    "read_description", "recognise", "stage_channels",
]
