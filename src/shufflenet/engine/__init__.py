"""Training and evaluation: configuration, schedule, optimizer, loops and checkpoints."""
