"""Turn Hydra's and OmegaConf's multi-line composition errors into one line with a fix."""

from __future__ import annotations

import re

from cvtrain.errors import UserError, closest, error_chain


def explain(error: BaseException) -> str:
    """One line that says what is wrong with the config and how to fix it."""
    chain = error_chain(error)
    for cause in chain:
        if isinstance(cause, UserError):
            return worker_message(cause)
    from cvtrain.config.launcher_errors import explain_launcher_failure  # imports Hydra: only here

    launcher = explain_launcher_failure(error)
    if launcher:
        return launcher
    for cause in chain:
        if type(cause).__name__ == "OverrideParseException":
            override = getattr(cause, "override", "") or str(cause).split(":", 1)[-1].split("^")[0].strip()
            return (f"cannot parse the override '{override}'; quote a value that has spaces or symbols, "
                    "e.g. 'prompt=\"Is it? Yes!\"'.")
        line = _explain_omegaconf(cause)
        if line:
            return line
    return _first_line(worker_message(chain[0]))


# torch's DataLoader re-raises a worker's exception in the main process as the same type,
# with a message that holds the worker's whole traceback (ExceptionWrapper.reraise).
_WORKER_WRAPPER = re.compile(r"\ACaught (?P<kind>[\w.]+) in (?P<where>[^\n]*?)\.?\n+Original Traceback", re.S)


def worker_message(error: BaseException) -> str:
    """The message `error` was raised with, also when a DataLoader worker raised it: then
    torch's 'Caught X in DataLoader worker process N. Original Traceback ...' is dropped and
    the worker's own message (the traceback's last entry) is kept."""
    text = str(error)
    if not _WORKER_WRAPPER.match(text):
        return text
    kind = type(error)
    name = kind.__qualname__
    qualified = name if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{name}"
    for prefix in (f"\n{qualified}: ", f"\n{name}: "):  # traceback's 'module.Type: message' line
        at = text.rfind(prefix)
        if at >= 0:
            return text[at + len(prefix):].strip()
    last = text.strip().splitlines()[-1].strip()  # another layout: the last line, minus 'Type: '
    kind_name, sep, message = last.partition(": ")
    return message.strip() if sep and re.fullmatch(r"[\w.]+", kind_name) else last


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else "invalid configuration"


def _explain_omegaconf(error: BaseException) -> str | None:
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

    key = getattr(error, "full_key", None) or ""
    if isinstance(error, MissingMandatoryValue):
        return f"{key} is required but not set; pass it on the command line, e.g. {key}=VALUE."
    if isinstance(error, (ConfigAttributeError, ConfigKeyError)) and key:
        return _unknown_key(error, key)
    if isinstance(error, ValidationError) and key:
        message = str(getattr(error, "msg", error)).strip().splitlines()[0].rstrip(".")
        expected = _expected_type(message)
        fix = f" Pass {expected}." if expected else ""
        return f"{key}: {message}.{fix}".replace("..", ".")
    return None


def _unknown_key(error: BaseException, key: str) -> str:
    section, _, name = key.rpartition(".")
    valid = _keys_of(getattr(error, "parent_node", None))
    hint = closest(name, valid) if valid else None
    maybe = f" Did you mean '{section + '.' if section else ''}{hint}'?" if hint else ""
    listing = f" Valid keys{' of ' + section if section else ''}: {', '.join(valid)}." if valid else ""
    if section == "optimizers":  # a typed map: its keys are the optimizer names the task's YAML declares
        listing = (f" This task's optimizers: {', '.join(valid)}." if valid else
                   " This task has one optimizer: set it with optimizer.* (optimizers.<name>.* is for tasks with several).")
    return f"unknown config key '{key}'.{maybe}{listing}"


def _keys_of(node) -> list[str]:
    try:
        return sorted(str(k) for k in node.keys())
    except Exception:
        return []


def _expected_type(message: str) -> str:
    match = re.search(r"converted to (\w+)", message)
    kinds = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}
    if match:
        return kinds.get(match[1], f"a {match[1]}")
    match = re.search(r"expected one of \[(.*?)\]", message)
    return f"one of {match[1]}" if match else ""
