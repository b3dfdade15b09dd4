"""Tasks: how a batch becomes losses, predictions and scores. A task owns no loop.

`cvtrain.registry.TASKS` (and `LOSSES`) import every module of this package at their
first lookup, so a new task module registers itself without being listed anywhere.
"""
