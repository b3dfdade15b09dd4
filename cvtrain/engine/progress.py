"""Progress display: a rich bar on a terminal, plain periodic lines elsewhere.

A batch job's log should not fill with bar redraws, and a person at a terminal should
not read a wall of lines: `trainer.progress=auto` picks by whether stdout is a TTY.
Only rank 0 shows anything.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("cvtrain")


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _fmt_values(values: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in values.items())


class Progress:
    """Tracks one phase (an epoch or an evaluation) of `total` steps."""

    def __init__(self, kind: str, enabled: bool = True):
        kind = getattr(kind, "value", kind)
        if kind == "auto":
            kind = "rich" if sys.stdout.isatty() else "plain"
        self.kind = kind if enabled else "none"
        self._bar = None
        self._task = None

    def start(self, description: str, total: int) -> None:
        self.description, self.total, self.done = description, total, 0
        self._t0 = time.perf_counter()
        if self.kind == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[values]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, values="")

    def advance(self, steps: int, values: dict[str, float] | None = None, samples: int = 0) -> None:
        """Record `steps` more steps; `values` (loss, lr, ...) are shown when given."""
        self.done += steps
        elapsed = time.perf_counter() - self._t0
        shown = dict(values or {})
        if samples and elapsed > 0:
            shown["samples/s"] = samples / elapsed
        if self.kind == "rich" and self._bar is not None:
            update = {"values": _fmt_values(shown)} if values is not None else {}
            self._bar.update(self._task, advance=steps, **update)
        elif self.kind == "plain" and values is not None:
            eta = elapsed / max(1, self.done) * (self.total - self.done)
            log.info("%s %d/%d %s eta %s", self.description, self.done, self.total, _fmt_values(shown), _fmt_duration(eta))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
