"""Small helpers with no model knowledge: checkpoints and their schema, file safety, CPU
settings, the optional PyTorch import."""
