"""What the diffusion task shows and writes: sample grids, the denoising trajectory, SR
rows, and mode=predict (samples, upsampled inputs, or the two-checkpoint cascade).

Kept apart from cvtrain/tasks/diffusion.py, which trains and scores: these functions only
read the task (its config, classes, active EMA network) and write images.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cvtrain.errors import UserError
from cvtrain.tasks.diffusion_sampling import Denoiser, to_signed, to_uint8, upsample
from cvtrain.tasks.sample_grids import append_gif_frame, save_grid

log = logging.getLogger("cvtrain")


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name) or "class"


def _seed(task, offset: int) -> torch.Generator:
    return torch.Generator(device=task.device).manual_seed(int(task.cfg.seed) * 7919 + offset)


def _draw(task, denoiser: Denoiser, n: int, labels, steps: int, seed: int, sampler: str = "ddim", keep: int = 0,
          lowres: torch.Tensor | None = None):
    t = task.cfg.task
    w = float(t.guidance) if lowres is None else 1.0
    return denoiser.generate(n, task.size, task.channels, task.device, labels, w, sampler, steps, float(t.eta),
                             _seed(task, seed), lowres=lowres, aug_fraction=float(t.sr_aug_level), keep=keep)


def _trajectory_grid(kept: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, int]:
    """Snapshots (t, x_t (rows, C, H, W)) as one image per (row, t), row-major, and the column count."""
    columns = [to_uint8(x).cpu() for _, x in kept]
    return torch.stack(columns, dim=1).flatten(0, 1), len(columns)


def save_base_images(task, out_dir: Path) -> list[Path]:
    """A grid_size x grid_size grid per class (class_<name>.png) at task.guidance, all of
    them as samples.png (one row per class, also appended to samples.gif), and
    trajectory.png: x_t from pure noise (left) to the sample (right), one row per image."""
    denoiser, n, steps = task.denoiser(), int(task.cfg.task.grid_size), int(task.cfg.task.eval_steps)
    paths: list[Path] = []
    if task.num_classes:
        rows = []
        for c, name in enumerate(task.class_names):
            labels = torch.full((n * n,), c, device=task.device, dtype=torch.long)
            images = to_uint8(_draw(task, denoiser, n * n, labels, steps, c)[0]).cpu()
            paths.append(save_grid(images, out_dir / f"class_{_file_name(name)}.png", cols=n))
            rows.append(images)
        grid = save_grid(torch.cat(rows), out_dir / "samples.png", cols=n * n)
    else:
        grid = save_grid(to_uint8(_draw(task, denoiser, n * n, None, steps, 0)[0]).cpu(), out_dir / "samples.png", cols=n)
    paths += [grid, append_gif_frame(grid, out_dir / "samples.gif")]
    count = min(4, task.num_classes) if task.num_classes else 4
    labels = torch.arange(count, device=task.device) if task.num_classes else None
    _, kept = _draw(task, denoiser, count, labels, steps, 999, keep=int(task.cfg.task.trajectory))
    images, cols = _trajectory_grid(kept)
    paths.append(save_grid(images, out_dir / "trajectory.png", cols=cols))
    return paths


def save_sr_images(task, out_dir: Path) -> list[Path]:
    """sr.png: rows of low-res (nearest, to size) | bicubic | SR | real, from the last
    evaluation's first batch; trajectory.png: the SR model denoising the first rows."""
    shown = getattr(task, "_shown", None)
    if not shown:
        return []
    rows = min(2 * int(task.cfg.task.grid_size), len(shown["sr"]))
    images = torch.stack([shown[k][:rows] for k in ("low", "bicubic", "sr", "real")], dim=1).flatten(0, 1)
    paths = [save_grid(images, out_dir / "sr.png", cols=4)]
    count = min(4, rows)
    low = to_signed(shown["lowres"][:count]).to(task.device)
    _, kept = _draw(task, task.denoiser(), count, None, int(task.cfg.task.eval_steps), 999,
                    keep=int(task.cfg.task.trajectory), lowres=low)
    images, cols = _trajectory_grid(kept)
    paths.append(save_grid(images, out_dir / "trajectory.png", cols=cols))
    return paths


# --- mode=predict ----------------------------------------------------------------------------
def predict(task, out_dir: Path) -> list[dict[str, Any]]:
    """A base checkpoint: num_samples images (class=NAME, or every class in turn). An
    sr_ddpm checkpoint: input= images upsampled. Two checkpoints (base, then sr_ddpm): the
    cascade, the base model's samples upsampled."""
    states = dict(task.checkpoints or {})
    if len(states) > 2:
        raise UserError(f"ckpt names {len(states)} checkpoints; a diffusion cascade takes two: ckpt=[BASE,SR].")
    names = list(states)
    if task.super_resolution:
        if len(states) > 1:
            raise UserError(f"ckpt '{names[0]}' is an sr_ddpm checkpoint; a cascade names the base model first: "
                            "ckpt=[BASE,SR].")
        return _upsample_inputs(task, out_dir)
    if len(states) == 2:
        return _cascade(task, out_dir, names[1], states[names[1]])
    images, titles = _samples(task)
    return _write_samples(images, titles, out_dir)


def _labels(task, n: int) -> tuple[torch.Tensor | None, list[str]]:
    """class=NAME for every sample, else every class in turn (a conditional model)."""
    wanted = task.cfg.get("class")
    if not task.num_classes:
        if wanted is not None:
            raise UserError(f"class={wanted} needs a class-conditional model; this checkpoint's is unconditional "
                            "(model.class_conditional=false).")
        return None, [""] * n
    if wanted is not None:
        if wanted not in task.class_names:
            from cvtrain.errors import unknown_choice

            raise unknown_choice("class", str(wanted), task.class_names)
        index = [task.class_names.index(wanted)] * n
    else:
        index = [i % task.num_classes for i in range(n)]
    return torch.tensor(index, device=task.device), [task.class_names[i] for i in index]


def _samples(task) -> tuple[torch.Tensor, list[str]]:
    """num_samples uint8 samples of the base model, in batches of dataset.eval_batch_size."""
    t, n = task.cfg.task, int(task.cfg.num_samples)
    labels, titles = _labels(task, n)
    denoiser, size = task.denoiser(), max(1, int(task.cfg.dataset.eval_batch_size))
    parts = []
    for start in range(0, n, size):
        chunk = None if labels is None else labels[start : start + size]
        count = min(size, n - start)
        parts.append(to_uint8(_draw(task, denoiser, count, chunk, int(t.sample_steps), start, sampler=str(t.sampler))[0]).cpu())
    return torch.cat(parts), titles


def _write_samples(images: torch.Tensor, titles: list[str], out_dir: Path, prefix: str = "sample") -> list[dict]:
    records = []
    for i, (image, title) in enumerate(zip(images, titles)):
        path = save_grid(image[None], out_dir / f"{prefix}_{i:04d}.png", cols=1)
        records.append({"input": f"{prefix} {i}" + (f" ({title})" if title else ""), "prediction": str(path),
                        **({"class": title} if title else {})})
    save_grid(images, out_dir / "samples.png", cols=8)
    return records


def _upsample_inputs(task, out_dir: Path) -> list[dict[str, Any]]:
    """input= image files, read at dataset.image_size, upsampled by the SR model."""
    from cvtrain.tasks.images import expand_inputs, load_image

    files = expand_inputs(task.cfg.input)
    low_size = int(task.cfg.dataset.image_size)
    low = torch.stack([load_image(f, low_size, task.channels) for f in files])
    sr = _upsample(task, task.denoiser(), low, int(task.cfg.task.sample_steps))
    bicubic = to_uint8(upsample(to_signed(low), task.size, "bicubic"))
    nearest = to_uint8(upsample(to_signed(low), task.size, "nearest"))
    save_grid(torch.stack([nearest, bicubic, sr], dim=1).flatten(0, 1), out_dir / "sr.png", cols=3)
    records = []
    for f, image in zip(files, sr):
        path = save_grid(image[None], out_dir / f"sr_{_file_name(Path(f).stem)}.png", cols=1)
        records.append({"input": str(f), "prediction": str(path)})
    return records


def _upsample(task, denoiser: Denoiser, low: torch.Tensor, steps: int, labels=None) -> torch.Tensor:
    """uint8 low-res images -> uint8 SR images at task.size (the SR model's own size)."""
    t, size = task.cfg.task, max(1, int(task.cfg.dataset.eval_batch_size))
    parts = []
    for start in range(0, len(low), size):
        chunk = to_signed(low[start : start + size]).to(task.device)
        chunk_labels = None if labels is None else labels[start : start + size]
        out, _ = denoiser.generate(len(chunk), denoiser.net.image_size, denoiser.net.channels, task.device,
                                   chunk_labels, 1.0, str(t.sampler), int(t.sample_steps), float(t.eta),
                                   _seed(task, 50000 + start), lowres=chunk, aug_fraction=float(t.sr_aug_level))
        parts.append(to_uint8(out).cpu())
    return torch.cat(parts)


def _cascade(task, out_dir: Path, name: str, state: dict) -> list[dict[str, Any]]:
    """Base samples at dataset.image_size, upsampled by the SR checkpoint `name`."""
    sr, info = Denoiser.from_checkpoint(state, name, task.device)
    if not sr.super_resolution:
        raise UserError(f"ckpt '{name}' is a model={info['model']} checkpoint (a base model); the second checkpoint "
                        "of a cascade must be model=sr_ddpm.")
    if info["channels"] != task.channels:
        raise UserError(f"ckpt '{name}' upsamples {info['channels']}-channel images but the base model draws "
                        f"{task.channels}-channel ones; train both stages on the same data set.")
    base, titles = _samples(task)
    low = base
    if task.size != info["lowres_size"]:
        log.warning("resizing the base model's %d px samples to the SR model's %d px input", task.size, info["lowres_size"])
        low = to_uint8(F.interpolate(to_signed(base), size=(info["lowres_size"],) * 2, mode="bilinear",
                                     align_corners=False, antialias=True))
    labels = None
    if sr.num_classes and info["class_names"] == task.class_names and task.num_classes:
        labels = torch.tensor([task.class_names.index(t) for t in titles], device=task.device)
    high = _upsample(task, sr, low, int(task.cfg.task.sample_steps), labels)
    size = info["size"]
    rows = torch.stack([to_uint8(upsample(to_signed(low), size, "nearest")),
                        to_uint8(upsample(to_signed(low), size, "bicubic")), high], dim=1).flatten(0, 1)
    save_grid(rows, out_dir / "cascade.png", cols=3)
    save_grid(base, out_dir / "base_samples.png", cols=8)
    return _write_samples(high, titles, out_dir)
