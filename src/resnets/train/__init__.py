"""Training: config and recipes, lr schedule, checkpoints, and the loop."""
