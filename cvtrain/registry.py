"""Name -> builder registries (models, datasets, losses, metrics, tasks).

A builder registers itself with a decorator, as in timm and detectron2:

    MODELS = Registry("model")

    @MODELS.register("resnet18", family="classifier")
    def resnet18(cfg): ...

Modules that register builders import torch, so the registries are filled lazily:
the first lookup imports the provider modules given to the registry, so a name is
known only when needed. That keeps `cvtrain --help` and config errors free of the torch import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvtrain.errors import UserError, unknown_choice


@dataclass(frozen=True)
class Entry:
    """One registered builder and the family it belongs to.

    A family says what a builder is compatible with: a model's family ("classifier",
    "detector", ...) is matched against the families a task accepts, and a dataset's
    family is the task it feeds, so `shapes` can mean one thing per task.
    """

    name: str
    builder: Callable[..., Any]
    family: str = ""


class Registry:
    """A mapping from (family, name) to builders that explains itself when a name is wrong."""

    def __init__(self, kind: str, providers: tuple[str, ...] = ()):
        self.kind = kind
        self._providers = providers
        self._entries: dict[tuple[str, str], Entry] = {}
        self._loaded = False

    def register(self, name: str, family: str = ""):
        """Decorator that registers `builder` under `name` in `family`."""

        def decorate(builder):
            key = (family, name)
            if key in self._entries and self._entries[key].builder is not builder:
                raise ValueError(f"{self.kind} '{name}' ({family}) is registered twice")
            self._entries[key] = Entry(name, builder, family)
            return builder

        return decorate

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._providers:
                importlib.import_module(module)

    def names(self, families: tuple[str, ...] | None = None) -> list[str]:
        """Registered names, only those of `families` when given."""
        self._load()
        return sorted({e.name for e in self._entries.values() if families is None or e.family in families})

    def entry(self, name: str, families: tuple[str, ...] | None = None) -> Entry:
        """The entry for `name`; an unknown or incompatible name is a `UserError`."""
        self._load()
        fits = [e for e in self._entries.values() if e.name == name and (families is None or e.family in families)]
        if fits:
            return fits[0]
        valid = self.names(families)
        elsewhere = [e.family for e in self._entries.values() if e.name == name]
        if elsewhere:
            raise UserError(
                f"{self.kind} '{name}' is a {elsewhere[0]} {self.kind} and does not fit here; "
                f"valid: {', '.join(valid)}."
            )
        raise unknown_choice(self.kind, name, valid)

    def get(self, name: str, families: tuple[str, ...] | None = None) -> Callable[..., Any]:
        return self.entry(name, families).builder



MODELS = Registry("model", ("cvtrain.models",))
DATASETS = Registry(
    "dataset",
    (
        "cvtrain.data.classification", "cvtrain.data.shapes", "cvtrain.data.corpora", "cvtrain.data.captions",
        "cvtrain.data.segmentation", "cvtrain.data.detection",
    ),
)
LOSSES = Registry("loss", ("cvtrain.tasks.losses",))
METRICS = Registry("metric", ("cvtrain.metrics.classification", "cvtrain.metrics.language", "cvtrain.metrics.segmentation"))
TASKS = Registry("task", ("cvtrain.tasks",))
