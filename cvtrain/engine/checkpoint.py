"""Checkpoints: written atomically, read with weights_only=True, refused with one line.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so it loads under
`torch.load(..., weights_only=True)`, which never runs code from the file. It is written
to a temporary file in the same folder and moved into place with os.replace, so a crash
mid-write leaves the previous checkpoint intact, never a truncated one; the temporary
file of a killed write is removed by the next save of that checkpoint.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvtrain.errors import UserError

FORMAT = 1


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` so that `path` is always either the old or the new file.

    A write killed midway (SIGKILL, a node lost) leaves its `.NAME.XXXX.tmp` behind; such
    leftovers of `path` are removed here, before the new one is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(path: Path) -> None:
    """Delete `.{name}.*.tmp` next to `path`: what interrupted save_atomic calls left."""
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:
                pass  # gone already, or not ours to delete: it only wastes space


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a cvtrain checkpoint safely; any problem with the file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; pass ckpt=PATH of a checkpoints/*.pt file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; we report ourselves
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refusal(path, error) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as error:
        raise UserError(
            f"checkpoint '{path}' is corrupt or truncated ({type(error).__name__}); "
            "use checkpoints/best.pt or an earlier copy."
        ) from error
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or "models" not in obj:
        raise UserError(f"'{path}' is not a cvtrain checkpoint (format {FORMAT}); pass one written by cvtrain.")
    return obj


# How torch's weights-only unpickler words a refusal, across versions: "Unsupported global:
# GLOBAL posix.system was not an allowed global by default" (2.4-2.6), "Trying to load
# unsupported GLOBAL posix.system whose module posix is blocked" (newer), "Trying to call
# reduce for unrecognized function <built-in function system>", "Can only build Tensor,
# Parameter, OrderedDict or types allowlisted via `add_safe_globals`, but got <class 'x.Y'>".
_GLOBAL = re.compile(r"\bGLOBAL\s+['\"`]?([A-Za-z_][\w.]*)", re.IGNORECASE)
_NOT_NAMES = {"by", "was", "is", "whose", "in", "of", "from", "the", "a", "an", "that", "not", "to"}
_REFUSED_OBJECT = re.compile(r"(?:unrecognized function|allowlisted[^<\n]*?but got)\s+<([^>\n]{1,120})>", re.IGNORECASE)
_REFUSAL_WORDS = re.compile(r"unsupported global|allowed global|is blocked|allowlist|safe_globals|"
                            r"unrecognized function", re.IGNORECASE)
_UNSAFE = ("the file names Python code to import or call, which weights_only loading never runs); only load "
           "checkpoints you trust, saved by cvtrain as plain tensors.")


def _refusal(path: Path, error: Exception) -> UserError:
    """Unsafe content (a pickle that would import or call Python objects) or plain garbage."""
    text = " ".join(str(error).split())
    what = _refused_name(text)
    if what:
        return UserError(f"checkpoint '{path}' refused: it would import {what} ({_UNSAFE}")
    if _REFUSAL_WORDS.search(text):
        return UserError(f"checkpoint '{path}' refused: it would import or run Python objects ({_UNSAFE}")
    return UserError(f"checkpoint '{path}' is corrupt or truncated (not a torch checkpoint); use another copy.")


def _refused_name(text: str) -> str | None:
    """The global (module.name) or object that a refused pickle names, when the message says."""
    names = [m[1].rstrip(".") for m in _GLOBAL.finditer(text) if m[1].lower() not in _NOT_NAMES]
    if names:
        return names[0][:80]
    match = _REFUSED_OBJECT.search(text)
    if match:  # "<built-in function system>", "<class 'x.Y'>"
        words = match[1].replace("'", " ").split()
        return words[-1][:80] if words else None
    return None


def sampling_weights(state: dict[str, Any], name: str) -> tuple[dict[str, Any], bool]:
    """Model `name`'s weights to sample or evaluate with: its EMA's when the run kept one,
    else the trained ones; and whether they are the EMA's. The EMA is saved as the
    trainer's AveragedModel state ("module." + the network's keys, and n_averaged), so the
    format is read here, beside where it is written.
    """
    ema = (state.get("ema") or {}).get(name)
    if ema is None:
        return state["models"][name], False
    return {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}, True


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as types weights_only loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
