"""Name -> builder registries (models, datasets, losses, metrics, tasks).

A builder registers itself with a decorator, as in timm and detectron2:

    MODELS = Registry("model", packages=("cvtrain.models",))

    @MODELS.register("resnet18", family="classifier")
    def resnet18(cfg): ...

Modules that register builders import torch, so the registries are filled lazily: the
first lookup imports every module of the registry's packages, recursively. A new module
that registers itself is found without a list to edit, and `cvtrain --help` and config
errors stay free of the torch import. A module outside those packages (a user's model
named in a config) registers by being imported: `import_providers(["my_models"])`, or
`MODELS.add_provider("my_models")` to import it at the first lookup.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
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
    """A mapping from (family, name) to builders that explains itself when a name is wrong.

    `packages` are searched, every module in them, at the first lookup; `providers` are
    single modules imported then too (see `add_provider`).
    """

    def __init__(self, kind: str, packages: tuple[str, ...] = (), providers: tuple[str, ...] = ()):
        self.kind = kind
        self._packages = tuple(packages)
        self._providers = list(providers)
        self._entries: dict[tuple[str, str], Entry] = {}
        self._loaded = False

    def register(self, name: str, family: str = ""):
        """Decorator that registers `builder` under `name` in `family`; a second, different
        builder under the same name would make lookups ambiguous, so it is refused."""

        def decorate(builder):
            key = (family, name)
            taken = self._entries.get(key)
            if taken is not None and taken.builder is not builder:
                raise ValueError(
                    f"{self.kind} '{name}' (family '{family}') is registered twice, by {_where(taken.builder)} "
                    f"and {_where(builder)}; give one of them another name."
                )
            self._entries[key] = Entry(name, builder, family)
            return builder

        return decorate

    def add_provider(self, module: str) -> None:
        """Have `module` imported with the registry's packages, for builders that live
        outside them; imported at once when the registry is already filled."""
        if self._loaded:
            import_providers([module])
        elif module not in self._providers:
            self._providers.append(module)

    def _load(self) -> None:
        """Import the packages and providers once, at the first lookup (they import torch)."""
        if self._loaded:
            return
        self._loaded = True  # first: a provider may look names up while it is imported
        try:
            for package in self._packages:
                import_package(package)
            import_providers(self._providers)
        except BaseException:
            self._loaded = False  # the next lookup tries again, and fails the same way
            raise

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
        """The builder for `name`, explained as in `entry` when it is wrong."""
        return self.entry(name, families).builder


def import_package(name: str) -> None:
    """Import package `name` and every module below it, so the builders they register
    are known without a list of modules to keep up to date."""
    module = importlib.import_module(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", ())):
        import_package(f"{name}.{info.name}")


def import_providers(names: Iterable[str]) -> None:
    """Import modules that register builders when imported (a user's model module named
    in a config); a module that cannot be found is a `UserError`."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is None or not (name == error.name or name.startswith(error.name + ".")):
                raise  # the module exists but imports something missing: its traceback says what
            raise UserError(
                f"cannot import module '{name}' that registers builders: no module named '{error.name}'; "
                "check the name, or put its folder on PYTHONPATH (or pip install it)."
            ) from None


def _where(builder) -> str:
    """Where a builder is defined, for the double-registration error."""
    return f"{getattr(builder, '__module__', '?')}.{getattr(builder, '__qualname__', repr(builder))}"


MODELS = Registry("model", packages=("cvtrain.models",))
DATASETS = Registry("dataset", packages=("cvtrain.data",))
LOSSES = Registry("loss", packages=("cvtrain.tasks",))
METRICS = Registry("metric", packages=("cvtrain.metrics",))
TASKS = Registry("task", packages=("cvtrain.tasks",))
