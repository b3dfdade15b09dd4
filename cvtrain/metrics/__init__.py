"""Scorers: thin, tested adapters over the reference definitions of each metric.

Importing this package registers every metric in `cvtrain.registry.METRICS`.
"""

from cvtrain.metrics import classification, language  # noqa: F401  (registers metrics)
