"""Pretrained weights from local files: read safely, matched by name and shape.

Every model family loads `model.weights` / `model.backbone_weights` through here, so a
missing, corrupt, unsafe or mismatched file gives the same one-line error whichever
model asked. Nothing is downloaded, and files are read with `weights_only=True`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cvtrain.errors import UserError

log = logging.getLogger(__name__)

_NO_FILE_FIX = (
    "download the torchvision weights file once on a machine with internet and pass its path, "
    "or drop {key} to train from scratch."
)


def read_state_dict(path: str, key: str = "model.weights") -> dict[str, torch.Tensor]:
    """read_tensors with the wrapper prefixes of DDP, torch.compile and a saved
    Classifier dropped from the names, as load_matching compares them."""
    return {_strip_prefixes(k): v for k, v in read_tensors(path, key).items()}


def read_tensors(
    path: str, key: str = "model.weights", nested: tuple[str, ...] = ("state_dict", "model")
) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, loaded with `weights_only=True`, names as saved.

    weights_only refuses pickles that would build arbitrary objects, so a malicious file
    is reported, never executed. A state dict nested under the `nested` keys, in order
    (training checkpoints' "state_dict" or "model"), is unwrapped. `key` is the config
    key the errors name (model.weights, model.backbone_weights, ...).
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise UserError(f"{key}: no such file '{path}'; {_NO_FILE_FIX.format(key=key)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the file's fault
        raise UserError(
            f"{key}: refused to load '{path}' ({_why_refused(err)}); "
            "pass a plain state dict saved with torch.save(model.state_dict(), path), "
            "e.g. a torchvision weights file."
        ) from None
    return _tensors_of(obj, path, key, nested)


def _why_refused(err: Exception) -> str:
    """One short line saying why torch.load failed: unsafe content, or a broken file."""
    text = str(err)
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if detail and "Unsupported global" in detail.group(1):
        name = re.search(r"GLOBAL (\S+)", detail.group(1))
        what = f" ({name.group(1)})" if name else ""
        return f"unsafe: it would import or run Python objects{what}, which weights_only loading forbids"
    reason = detail.group(1).strip() if detail else (text.strip().splitlines() or [""])[0]
    reason = f"{type(err).__name__}: {reason[:120]}" if reason.strip() else type(err).__name__
    return f"unreadable or not a torch weights file: {reason}"


def _tensors_of(obj: Any, path: str, key: str, nested: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensor entries of a (possibly nested) state dict."""
    for name in nested:
        if isinstance(obj, Mapping) and isinstance(obj.get(name), Mapping):
            obj = obj[name]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    if not tensors:
        raise UserError(
            f"{key}: '{path}' holds no state dict of tensors; "
            "pass a file saved with torch.save(model.state_dict(), path)."
        )
    return tensors


def _strip_prefixes(key: str) -> str:
    """Drop the wrapper prefixes of DDP, torch.compile and a saved Classifier."""
    for prefix in ("module.", "_orig_mod.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_matching(
    model: nn.Module, state: dict[str, torch.Tensor], arch: str, path: str, skip: tuple[str, ...] = (),
    key: str = "model.weights",
) -> int:
    """Copy every tensor of `state` whose name and shape match `model`; skip the old head.

    Partial matches are allowed (a new input conv, a different width) and logged; none at
    all means the file is for another architecture, which is the user's mistake.
    """
    own = {_strip_prefixes(k): k for k in model.state_dict()}
    shapes = model.state_dict()
    matched = {
        own[k]: v for k, v in state.items()
        if k in own and not k.startswith(skip) and shapes[own[k]].shape == v.shape
    }
    if all(k.endswith("num_batches_tracked") for k in matched):  # BN counters fit anything
        raise UserError(
            f"{key}: no tensor in '{path}' fits {arch} (names or shapes differ); "
            f"pass a weights file made for {arch}, or pick the model that matches the file."
        )
    model.load_state_dict(matched, strict=False)
    wanted = [k for k in own if not k.startswith(skip)]
    if len(matched) < len(wanted):
        log.warning("%s: loaded %d of %d %s tensors from %s", key, len(matched), len(wanted), arch, path)
    return len(matched)
