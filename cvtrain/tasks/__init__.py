"""Tasks: how a batch becomes losses, predictions and scores. A task owns no loop.

Importing this package registers every task in `cvtrain.registry.TASKS`.
"""

from cvtrain.tasks import (  # noqa: F401  (registers the tasks)
    captioning,
    classification,
    detection,
    language_modeling,
    segmentation,
)
