"""Data: the embedded ShapesWorld data set, real formats from a local path, loaders.

`cvtrain.registry.DATASETS` imports every module of this package at its first lookup,
so a new builder module registers itself without being listed; this package imports
nothing itself, so the numpy-only generator (`cvtrain.data.shapesworld`) loads
without torch.
"""
