"""Data: the embedded ShapesWorld data set, real formats from a local path, loaders.

The builder modules register themselves in `cvtrain.registry.DATASETS` when the
registry is first used; this package imports nothing itself, so the numpy-only
generator (`cvtrain.data.shapesworld`) loads without torch.
"""
