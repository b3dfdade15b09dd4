"""Tasks: how a batch becomes losses, predictions and scores. A task owns no loop.

Importing this package registers every task in `cvtrain.registry.TASKS`.
"""

from cvtrain.tasks import captioning, classification, language_modeling  # noqa: F401  (registers the tasks)
