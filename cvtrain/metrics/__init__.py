"""Scorers: thin, tested adapters over the reference definitions of each metric.

The registered metric modules are imported by `cvtrain.registry.METRICS` when it is
first used; this package imports nothing itself, so the caption scorers (no torch)
start fast in `cvtrain-score`.
"""
