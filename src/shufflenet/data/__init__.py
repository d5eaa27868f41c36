"""Dataset pipelines and the preprocessing table they share with export and inference."""
from .augment import AUTO_AUGMENT_POLICIES, BatchMixer, parse_auto_augment, repeated_aug_order
from .pipeline import DATASET_IMAGE_SIZES, DatasetInfo, PipelineSpec, create_dataset, seeded, shard_order
from .presets import PRESETS, Preprocessing, get_preprocessing
from .sources import DataError, explain_pipeline_error, explained_pipeline_errors, open_source

__all__ = [
    "AUTO_AUGMENT_POLICIES", "DATASET_IMAGE_SIZES", "PRESETS", "BatchMixer", "DataError", "DatasetInfo",
    "PipelineSpec", "Preprocessing", "create_dataset", "explain_pipeline_error",
    "explained_pipeline_errors", "get_preprocessing", "open_source", "parse_auto_augment",
    "repeated_aug_order", "seeded", "shard_order",
]
