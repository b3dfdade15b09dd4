"""Checkpoints: written atomically, read with weights_only=True, refused with one line.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so it loads under
`torch.load(..., weights_only=True)`, which never runs code from the file. It is written
to a temporary file in the same folder and moved into place with os.replace, so a crash
mid-write leaves the previous checkpoint intact, never a truncated one.
"""

from __future__ import annotations

import os
import pickle
import random
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
    """torch.save `obj` to `path` so that `path` is always either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _refusal(path: Path, error: Exception) -> UserError:
    """Unsafe content (a pickle that would import or call Python objects) or plain garbage."""
    text = str(error)
    if "Unsupported global" in text:
        what = text.split("Unsupported global:", 1)[1].split("was not")[0].strip().rstrip(".")
        return UserError(
            f"checkpoint '{path}' refused: it would import or run Python objects ({what[:80]}), which "
            "weights_only loading never does; only load checkpoints you trust, saved as plain tensors."
        )
    return UserError(f"checkpoint '{path}' is corrupt or truncated (not a torch checkpoint); use another copy.")


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
