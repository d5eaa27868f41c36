"""Dataset pipelines and the preprocessing table they share with export and inference."""
