"""What a generative task reads off its training images once: class names and channels.

A generator is built for the data set's channel count and, when class-conditional, its
classes; predict and eval must rebuild it from a checkpoint alone, with no data set at
hand. The mixin reads both from the train split on first use and keeps them in the task's
checkpoint state (`meta_state` / `load_meta`), so every generative task does it one way.
"""

from __future__ import annotations

from typing import Any


class ImageSetMeta:
    """Mixin for a task with `build_dataset(split)`: `class_names` and `channels`, lazily."""

    _meta: dict[str, Any]

    def _fill_meta(self) -> None:
        if not self._meta:
            train = self.build_dataset("train")
            self._meta = {"class_names": list(train.class_names), "channels": int(train.in_channels)}

    @property
    def class_names(self) -> list[str]:
        self._fill_meta()
        return self._meta["class_names"]

    @property
    def channels(self) -> int:
        self._fill_meta()
        return self._meta["channels"]

    def meta_state(self) -> dict[str, Any]:
        return {"class_names": self.class_names, "channels": self.channels}

    def load_meta(self, state: dict[str, Any]) -> None:
        self._meta = {"class_names": list(state["class_names"]), "channels": int(state["channels"])}
