"""Reading the json files scorers are handed, with one-line errors (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cvtrain.errors import UserError


def read_json(path: str | Path, what: str, option: str = "", kind: str = "COCO-format json") -> Any:
    """The parsed file, or a one-line error for a missing file or malformed JSON;
    `option` names the flag that passed the file (e.g. --gt), when there is one, and
    `kind` what the file should be."""
    path = Path(path)
    given = f" with {option}" if option else ""
    if not path.is_file():
        raise UserError(f"{what} file '{path}' not found; pass an existing {kind}{given}.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{what} file '{path}' is not valid JSON ({error.msg} at line {error.lineno}); fix or regenerate it."
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{what} file '{path}' is not UTF-8 text; pass a {kind}{given}.") from None
