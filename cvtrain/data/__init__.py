"""Data: the embedded ShapesWorld data set, real formats from a local path, loaders.

Importing this package registers every dataset builder in `cvtrain.registry.DATASETS`;
the ShapesWorld generator itself (`cvtrain.data.shapesworld`) needs numpy only.
"""

from cvtrain.data import classification, shapes  # noqa: F401  (registers builders)
