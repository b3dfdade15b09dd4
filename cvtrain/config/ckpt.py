"""`ckpt`: one checkpoint, or several where a task needs them (a diffusion cascade's base
model and its upsampler). The first one is primary: its config and weights are the run's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cvtrain.errors import UserError

PRIMARY = "main"  # the name of a lone checkpoint


def checkpoint_paths(value) -> dict[str, str]:
    """`ckpt` as {name: path}, primary first: a path is {"main": path}, a mapping keeps its
    names (ckpt={base: a.pt, upsampler: b.pt}), a list is named by position (ckpt=[a.pt,b.pt]:
    "0", "1")."""
    value = _plain(value)
    if isinstance(value, str):
        paths = {PRIMARY: value}
    elif isinstance(value, Mapping):
        paths = {str(k): v for k, v in value.items()}
    elif isinstance(value, Sequence):
        paths = {str(i): v for i, v in enumerate(value)}
    else:
        raise UserError(f"ckpt={value!r} is not a path; pass ckpt=PATH, ckpt=[A,B] or ckpt={{NAME: PATH, ...}}.")
    if not paths:
        raise UserError("ckpt names no checkpoint; pass ckpt=PATH, ckpt=[A,B] or ckpt={NAME: PATH, ...}.")
    bad = [name for name, path in paths.items() if not isinstance(path, str) or not path]
    if bad:
        raise UserError(f"ckpt entry '{bad[0]}' is not a path; give each checkpoint as NAME: PATH.")
    return paths


def _plain(value):
    """An OmegaConf list or mapping as Python's (what a run's JSON files can hold)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def describe_ckpt(value):
    """`ckpt` as written into eval.json: the path, or the {name: path} mapping."""
    value = _plain(value)
    return value if isinstance(value, str) or value is None else checkpoint_paths(value)
