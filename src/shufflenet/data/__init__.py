"""Dataset pipelines and the preprocessing table they share with export and inference."""
from .pipeline import DEFAULT_IMAGE_SIZE, DatasetInfo, PipelineSpec, create_dataset, shard_order
from .presets import PRESETS, Preprocessing, get_preprocessing
from .sources import DataError, explain_pipeline_error, explained_pipeline_errors, open_source

__all__ = [
    "DEFAULT_IMAGE_SIZE", "PRESETS", "DataError", "DatasetInfo", "PipelineSpec", "Preprocessing",
    "create_dataset", "explain_pipeline_error", "explained_pipeline_errors", "get_preprocessing",
    "open_source", "shard_order",
]
