"""Scorers: thin, tested adapters over the reference definitions of each metric.

`cvtrain.registry.METRICS` imports every module of this package at its first lookup;
this package imports nothing itself, so the caption scorers (no torch) start fast in
`cvtrain-score`.
"""
