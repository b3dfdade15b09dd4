"""Image-to-image translation: model=pix2pix (paired) or model=cyclegan (unpaired).

`task=translation` is one command for two methods that share data, images and
prediction but not their objective or scores, so the task is built per model family:
`Pix2PixTask` (cvtrain/tasks/pix2pix.py) or `CycleGANTask` (cvtrain/tasks/cyclegan.py),
both on the `TranslationTask` base here, which owns what they share:

- data: the `translation` family of data sets (dataset=shapes|aligned|unaligned,
  cvtrain/data/translation.py), asked for pairs when the model needs them; batches are
  {"a": uint8, "b": uint8} (and ShapesWorld's "mask"), flipped together when
  task.augment; generators work in [-1, 1];
- models and optimizers: the family's builder, one "generator" optimizer over every
  generator and one "discriminator" over every discriminator, EMA for generators only;
- what people look at: input | output | target triptychs at every evaluation (each
  subclass picks its rows), and mode=predict, which translates every image of
  `input=` (a file, folder or glob) A -> B into translated/<name>.png.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch

from cvtrain.engine.task import ModulePolicy, Task
from cvtrain.registry import DATASETS, MODELS, TASKS
from cvtrain.tasks.gan import to_signed


class TranslationTask(Task):
    """What pix2pix and CycleGAN share (see the module docstring)."""

    name = "translation"
    paired = True  # the model trains on pairs (pix2pix); CycleGAN takes any two domains

    def __init__(self, cfg):
        super().__init__(cfg)
        self._datasets: dict[str, Any] = {}
        self._shown: dict[str, list[tuple[torch.Tensor, ...]]] = {}

    # --- data and models ------------------------------------------------------
    def build_dataset(self, split: str):
        if split not in self._datasets:
            builder = DATASETS.get(self.cfg.dataset.name, families=("translation",))
            self._datasets[split] = builder(self.cfg.dataset, split, paired=self.paired)
        return self._datasets[split]

    def build_models(self):
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        return builder(self.cfg.model)

    def parameter_groups(self):
        """One optimizer for the generator(s), one for the discriminator(s), as the reference."""
        def of(kind: str):
            return itertools.chain.from_iterable(m.parameters() for n, m in self.models.items() if n.startswith(kind))

        return {"discriminator": of("discriminator"), "generator": of("generator")}

    def module_policy(self, name: str) -> ModulePolicy:
        return ModulePolicy(ema=name.startswith("generator"))

    def signed_pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's A and B in [-1, 1], flipped together when task.augment."""
        a, b = batch["a"], batch["b"]
        if self.cfg.task.augment:
            from cvtrain.tasks.images import random_hflip

            a, b = random_hflip(a, b)
        return to_signed(a), to_signed(b)

    # --- evaluation -----------------------------------------------------------
    def translate(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 A images -> uint8 B images (the A -> B generator)."""
        raise NotImplementedError

    def show(self, key: str, *images: torch.Tensor) -> None:
        """Keep the first logger.max_images rows (input, output, ...) of triptych `key`."""
        rows = self._shown.setdefault(key, [])
        room = self.cfg.logger.max_images - len(rows)
        if room > 0:
            rows.extend(zip(*(image[:room].cpu() for image in images)))

    def triptych_titles(self, key: str) -> tuple[str, ...]:
        return ("input", "output", "target")

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        from cvtrain.tasks.colorization import save_triptychs

        return [save_triptychs(rows, out_dir / f"{key}.png", self.triptych_titles(key))
                for key, rows in self._shown.items() if rows]

    def start_eval(self, split: str) -> None:
        self._shown = {}

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        """Each input image (resized to dataset.image_size) translated A -> B, written to
        translated/<stem>.png, with a grid of input | output pairs."""
        from cvtrain.tasks.colorization import save_triptychs
        from cvtrain.tasks.images import expand_inputs, load_image
        from cvtrain.tasks.sample_grids import save_grid
        from cvtrain.tasks.segmentation import _unique_name

        folder = (self.run_dir or out_dir.parent) / "translated"
        records, shown, used = [], [], set()
        for path in expand_inputs(self.cfg.input):
            image = load_image(path, self.cfg.dataset.image_size, 3).to(self.device)[None]
            output = self.translate(image)
            written = save_grid(output.cpu(), folder / _unique_name(path, used), cols=1, pad=0)
            records.append({"input": str(path), "prediction": str(written)})
            shown.append((image[0].cpu(), output[0].cpu()))
        if self.cfg.logger.images and shown:
            save_triptychs(shown[: self.cfg.logger.max_images], out_dir / "translations.png", ("input", "output"))
        return records


def _tasks() -> dict[str, type[TranslationTask]]:
    from cvtrain.tasks.cyclegan import CycleGANTask
    from cvtrain.tasks.pix2pix import Pix2PixTask

    return {"pix2pix": Pix2PixTask, "cyclegan": CycleGANTask}


@TASKS.register("translation")
def translation(cfg) -> TranslationTask:
    """The translation task of the model's family (pix2pix or cyclegan)."""
    from cvtrain.errors import UserError

    tasks = _tasks()
    family = str(cfg.model.get("family", ""))
    if family not in tasks:
        raise UserError(f"task=translation trains model families {', '.join(tasks)}, not '{family}'; "
                        "pick model=pix2pix or model=cyclegan.")
    return tasks[family](cfg)

