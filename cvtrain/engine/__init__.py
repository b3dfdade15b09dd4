"""The engine: the one training loop and what it owns (devices, precision, distribution,
checkpoints, logging). It knows nothing of any particular task."""
