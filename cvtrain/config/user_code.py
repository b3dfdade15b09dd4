"""A user's Python code named by their config files: imported before the task is built.

A model file in a user's config folder (`--config-dir myconf`) names the module holding
its builder (`module: my_models`); importing that module runs its `@MODELS.register`
decorator, so the task's registry lookup finds the model as it finds cvtrain's own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cvtrain.config.groups import user_config_dirs
from cvtrain.errors import UserError
from cvtrain.registry import import_providers


def import_user_modules(cfg) -> None:
    """Import the modules the run's task, model and data set files name (their `module` key)."""
    for section in ("task", "model", "dataset"):
        name = cfg[section].get("module") if section in cfg else None
        if name:
            import_module(str(name), f"{section}.module")


def import_module(name: str, key: str) -> None:
    """Import `name` with the user's config folders and the current directory on sys.path;
    a module that is not there is a one-line error naming where it was looked for."""
    folders = [str(d) for d in [*user_config_dirs(), Path.cwd()]]
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        import_providers([name])
    except UserError:  # the module itself is not there (what it imports is its own traceback)
        raise UserError(
            f"{key}={name}: no module '{name}' in {', '.join(folders)}; put {name.replace('.', '/')}.py in "
            f"the config folder (--config-dir) or the current directory, or fix {key} in its YAML file."
        ) from None
