"""User-facing errors: one line that names the problem and the fix.

Anything a user can get wrong (an unknown option, a missing path, a corrupt checkpoint)
raises `UserError`; the CLI prints its message on one line, without a traceback, and
exits non-zero. Bugs stay ordinary exceptions so they keep their tracebacks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix; its message is printed as-is on one line."""

    exit_code = 2


def error_chain(error: BaseException | None) -> list[BaseException]:
    """`error` and the errors it was raised from or during, outermost first (no cycles)."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice most similar to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_choice(kind: str, name: str, choices: Iterable[str], how: str = "") -> UserError:
    """The error for a name that is not one of `choices`, with a 'did you mean'."""
    choices = sorted(choices)
    hint = closest(name, choices)
    maybe = f" Did you mean '{hint}'?" if hint else ""
    fix = f" {how}" if how else ""
    return UserError(f"unknown {kind} '{name}'.{maybe} Valid: {', '.join(choices)}.{fix}")


class Stopped(Exception):
    """Training stopped on purpose (a signal) after saving its state: not a failure of the
    config, but not a success either. The CLI prints the message (when there is one: only
    rank 0 has one) and exits with `exit_code`, 128 + the signal's number by convention,
    which is what shells, SLURM and torchrun expect of a process ended by that signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(UserError):
    """A loss became NaN or infinite; the run stops so that no checkpoint holds NaN weights."""

    exit_code = 3
