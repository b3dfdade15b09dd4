"""Models: plain nn.Modules with registered builders and no training logic.

Importing this package registers every builder in `cvtrain.registry.MODELS`.
"""

from cvtrain.models import classifiers, detection, recurrent, segmentation  # noqa: F401  (registers builders)
