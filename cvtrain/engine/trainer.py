"""The one training loop: every task, from a classifier to a GAN, runs through it.

The trainer prepares the task's models (device, channels_last, DDP, torch.compile,
EMA), builds one optimizer and LR schedule per parameter group the task names, and
runs epochs of `task.train_step(batch, step)`. The task calls `step(name, loss)` once
per optimizer; the trainer does the rest (AMP scaling, gradient accumulation, clipping,
scheduler steps). Evaluation, checkpoints and records happen on the trainer's side.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cvtrain.engine import checkpoint as ckpt
from cvtrain.engine import distributed as dist
from cvtrain.engine.device import configure_runtime, move_batch, select_device
from cvtrain.engine.loader import build_loader
from cvtrain.engine.optim import build_optimizer, build_scheduler
from cvtrain.engine.precision import resolve as resolve_precision
from cvtrain.engine.progress import Progress
from cvtrain.engine.records import MetricsWriter, plot_curves, read_metrics
from cvtrain.engine.task import Task
from cvtrain.errors import UserError, unknown_choice

log = logging.getLogger("cvtrain")


class Trainer:
    """Runs fit / evaluate for one task in one run folder (on every rank)."""

    def __init__(self, cfg, task: Task, run_dir: Path, env: dist.DistEnv | None = None):
        self.cfg, self.tcfg, self.task = cfg, cfg.trainer, task
        self.run_dir, self.env = Path(run_dir), env or dist.DistEnv()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = select_device(self.tcfg.device, self.env)
        dist.init(self.env, dist.resolve_backend(self.tcfg.dist_backend, self.device))
        configure_runtime(self.tcfg, self.env, self.device, cfg.seed)
        self.precision = resolve_precision(self.tcfg.precision, self.device)
        self.task.device, self.task.run_dir = self.device, self.run_dir
        self._build_models()
        self.writer = MetricsWriter(self.run_dir, cfg.logger.tensorboard, self.env.is_main)
        self.epoch, self.global_step, self.best, self.best_epoch = 0, 0, None, None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_scaler)
        # Where the current batch stands in its accumulation cycle (set per batch).
        self._micro, self._boundary, self._stepped = 0, True, False

    # --- models ---------------------------------------------------------------
    def _build_models(self) -> None:
        torch.manual_seed(self.cfg.seed)  # the same initial weights on every rank
        models = self.task.build_models()
        fmt = torch.channels_last if self.tcfg.channels_last else torch.contiguous_format
        for module in models.values():
            module.to(self.device, memory_format=fmt)
        self.task.models = models
        self.ema = {n: self._ema_copy(m) for n, m in models.items()} if self.tcfg.ema_decay > 0 else {}
        self.train_modules = {n: self._wrap(m) for n, m in models.items()}
        torch.manual_seed(self.cfg.seed + self.env.rank)  # but rank-specific dropout

    def _ema_copy(self, module: nn.Module) -> nn.Module:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(self.tcfg.ema_decay), use_buffers=True)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.env.enabled and any(p.requires_grad for p in module.parameters()):
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        if self.tcfg.compile:
            module = torch.compile(module)
        return module

    def eval_modules(self) -> dict[str, nn.Module]:
        if self.ema:
            return {n: e.module for n, e in self.ema.items()}
        return self.task.models

    # --- data -----------------------------------------------------------------
    def loader(self, split: str, train: bool):
        dcfg = self.cfg.dataset
        return build_loader(
            self.task.build_dataset(split),
            batch_size=dcfg.batch_size if train else dcfg.eval_batch_size,
            train=train, rank=self.env.rank, world=self.env.world_size, seed=self.cfg.seed,
            num_workers=dcfg.num_workers, collate=self.task.collate(), pin_memory=self.device.type == "cuda",
        )

    # --- optimization ---------------------------------------------------------
    def _build_optimizers(self, steps_per_epoch: int) -> None:
        total = self.tcfg.max_steps if self.tcfg.max_steps > 0 else self.tcfg.epochs * steps_per_epoch
        self.total_steps = max(1, total)
        for name, params in self.task.parameter_groups().items():
            optimizer = build_optimizer(params, self.task.optimizer_config(name, self.cfg.optimizer))
            self.optimizers[name] = optimizer
            self.schedulers[name] = build_scheduler(optimizer, self.cfg.scheduler, self.total_steps)

    def step(self, name: str, loss: torch.Tensor) -> None:
        """Backward `loss` for optimizer `name`; step it at the end of an accumulation cycle."""
        if name not in self.optimizers:
            raise unknown_choice("optimizer name", name, self.optimizers)
        optimizer = self.optimizers[name]
        if self._micro == 0:
            optimizer.zero_grad(set_to_none=True)  # drop gradients another loss left here
        with self.precision.without_autocast():
            self.scaler.scale(loss / self.tcfg.grad_accum).backward()
        if not self._boundary:
            return
        if self.tcfg.clip_grad_norm > 0:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.tcfg.clip_grad_norm)
        self.scaler.step(optimizer)
        self.schedulers[name].step()
        optimizer.zero_grad(set_to_none=True)
        self._stepped = True

    def _sync_context(self):
        """Skip DDP's gradient all-reduce on micro-steps that do not end a cycle."""
        stack = contextlib.ExitStack()
        if not self._boundary:
            for module in self.train_modules.values():
                if isinstance(module, DistributedDataParallel):
                    stack.enter_context(module.no_sync())
        return stack

    # --- the loop -------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until epochs or max_steps run out; returns the last evaluation."""
        train_loader, val_loader = self.loader("train", True), self.loader("val", False)
        steps_per_epoch = max(1, len(train_loader) // self.tcfg.grad_accum)
        self._build_optimizers(steps_per_epoch)
        self._maybe_resume()
        if self._done() and self.global_step > 0:  # a requeue or resume of a finished run
            log.info("the run in %s is already complete (epoch %d, step %d)", self.run_dir, self.epoch, self.global_step)
            self.writer.close()
            return _last_record(self.run_dir)
        log.info(
            "training %s on %s (%s) for %s, %d step(s) per epoch, %d process(es); run folder %s",
            self.cfg.model.name, self.device, self.precision.dtype or "fp32",
            f"{self.tcfg.max_steps} steps" if self.tcfg.max_steps > 0 else f"{self.tcfg.epochs} epochs",
            steps_per_epoch, self.env.world_size, self.run_dir,
        )
        results: dict[str, float] = {}
        while not self._done():
            results = self._train_epoch(train_loader, val_loader) or results
            self.epoch += 1
            if self._eval_due_at_epoch_end():
                results = self._validate(val_loader)
            self._save("last")
        if not results:
            results = self._validate(val_loader)
        if self.env.is_main and self.cfg.logger.images:
            plot_curves(self.run_dir)
        self.writer.close()
        return results

    def _done(self) -> bool:
        if self.tcfg.max_steps > 0:
            return self.global_step >= self.tcfg.max_steps
        return self.epoch >= self.tcfg.epochs

    def _eval_due_at_epoch_end(self) -> bool:
        if self.tcfg.val_every_steps > 0:
            return self._done()
        return self.epoch % max(1, self.tcfg.val_every) == 0 or self._done()

    def _train_epoch(self, loader, val_loader) -> dict[str, float] | None:
        for module in self.task.models.values():
            module.train()
        self.task.active = self.train_modules
        loader.batch_sampler.set_epoch(self.epoch)
        progress = Progress(self.tcfg.progress, self.env.is_main)
        progress.start(f"epoch {self.epoch + 1}", len(loader))
        sums: dict[str, torch.Tensor] = {}
        count, samples, results, accum = 0, 0, None, self.tcfg.grad_accum
        for i, batch in enumerate(loader):
            self._micro = i % accum
            self._boundary = self._micro == accum - 1 or i == len(loader) - 1
            self._stepped = False
            batch = move_batch(batch, self.device, self.tcfg.channels_last)
            with self._sync_context(), self.precision.autocast():
                logs = self.task.train_step(batch, self.step)
            samples += _batch_size(batch) * self.env.world_size
            for key, value in logs.items():
                sums[key] = sums.get(key, 0) + value.detach().float()
            count += 1
            if self._stepped:
                results = self._after_optimizer_step(val_loader) or results
            values = None
            if self._boundary and (self.global_step % self.tcfg.log_every == 0 or i == len(loader) - 1):
                values, sums, count = self._log_values(sums, count), {}, 0
            progress.advance(1, values, samples)
            if self._done():
                break
        progress.stop()
        return results

    def _after_optimizer_step(self, val_loader) -> dict[str, float] | None:
        self.scaler.update()
        self.global_step += 1
        for name, ema in self.ema.items():
            ema.update_parameters(self.task.models[name])
        every = self.tcfg.val_every_steps
        if every > 0 and self.global_step % every == 0 and not self._done():
            results = self._validate(val_loader)
            self.task.active = self.train_modules
            for module in self.task.models.values():
                module.train()
            return results
        return None

    def _log_values(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        values = {k: float(v) / count for k, v in sums.items()}
        first = next(iter(self.schedulers.values()), None)
        if first is not None:
            values["lr"] = first.get_last_lr()[0]
        self.writer.scalars({f"train/{k}": v for k, v in values.items()}, self.global_step)
        return values

    # --- evaluation -----------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, loader, description: str = "eval", split: str = "val") -> dict[str, float]:
        """Run the task's metrics over `loader` with the evaluation weights (EMA if kept)."""
        modules = self.eval_modules()
        for module in modules.values():
            module.eval()
        self.task.active = modules
        self.task.start_eval(split)
        progress = Progress(self.tcfg.progress, self.env.is_main)
        progress.start(description, len(loader))
        for batch in loader:
            batch = move_batch(batch, self.device, self.tcfg.channels_last)
            with self.precision.autocast():
                self.task.eval_step(batch)
            progress.advance(1)
        progress.stop()
        return self.task.finish_eval()

    def _validate(self, loader) -> dict[str, float]:
        t0 = time.perf_counter()
        results = self.evaluate(loader, f"val {self.epoch}")
        name, mode = self.task.monitor()
        if name not in results:
            raise UserError(f"task.monitor={name} is not a metric of this task; valid: {', '.join(sorted(results))}.")
        improved = self.best is None or (results[name] > self.best if mode == "max" else results[name] < self.best)
        if improved:
            self.best, self.best_epoch = results[name], self.epoch
        record = {"epoch": self.epoch, "step": self.global_step, **results, "eval_seconds": time.perf_counter() - t0}
        self.writer.write(record)
        log.info("val epoch %d step %d: %s", self.epoch, self.global_step, _fmt(results))
        if self.env.is_main and self.cfg.logger.images:
            self.task.save_outputs(self.run_dir / "images", f"epoch{self.epoch:03d}")
        if improved:
            self._save("best")
        return results

    # --- checkpoints ----------------------------------------------------------
    def _state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "models": {n: m.state_dict() for n, m in self.task.models.items()},
            "ema": {n: e.state_dict() for n, e in self.ema.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "trainer": {"epoch": self.epoch, "step": self.global_step, "best": self.best, "best_epoch": self.best_epoch},
            "rng": rng,  # one entry per rank
            "config": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
            "task": self.task.state_dict(),
        }

    def _save(self, which: str) -> None:
        rng = dist.gather_objects(ckpt.rng_state())  # collective: every rank takes part
        if self.env.is_main and (which != "last" or self.tcfg.save_last):
            ckpt.save_atomic(self._state(rng), self.run_dir / "checkpoints" / f"{which}.pt")
        dist.barrier()

    def _maybe_resume(self) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        if not path.is_file():
            return
        state = ckpt.load(path)
        self.load_weights(state)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])
        self.scaler.load_state_dict(state["scaler"])
        t = state["trainer"]
        self.epoch, self.global_step, self.best, self.best_epoch = t["epoch"], t["step"], t["best"], t["best_epoch"]
        self._restore_rng(state["rng"])
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.global_step)

    def _restore_rng(self, states: list[dict[str, Any]]) -> None:
        """Each rank continues its own random streams (dropout, augmentation); with another
        number of processes than before, rank 0 continues and the others are reseeded."""
        if len(states) == self.env.world_size:
            ckpt.set_rng_state(states[self.env.rank])
        else:
            ckpt.set_rng_state(states[0])
            if self.env.rank > 0:
                torch.manual_seed(self.cfg.seed + 1000 * self.epoch + self.env.rank)

    def load_weights(self, state: dict[str, Any]) -> None:
        """Models, EMA and task state from a loaded checkpoint; mismatches are user errors."""
        self.task.load_state_dict(state.get("task", {}))
        for name, module in self.task.models.items():
            _load_module(module, state["models"], name)
        for name, ema in self.ema.items():
            if name in state.get("ema", {}):
                ema.load_state_dict(state["ema"][name])
            else:
                ema.module.load_state_dict(self.task.models[name].state_dict())


def _load_module(module: nn.Module, states: dict[str, Any], name: str) -> None:
    if name not in states:
        raise UserError(f"the checkpoint has no weights for '{name}'; it was written by another task.")
    try:
        module.load_state_dict(states[name])
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise UserError(f"the checkpoint's '{name}' weights do not fit this model ({first[:150]}); "
                        "evaluate with the model config it was trained with.") from error


def _last_record(run_dir: Path) -> dict[str, float]:
    records = read_metrics(run_dir)
    return {k: v for k, v in records[-1].items() if k not in ("epoch", "step")} if records else {}


def _batch_size(batch: Any) -> int:
    """Samples in a batch. A dict counts by its first tensor field, so a detector's batch
    ({"images": list, "targets": list, "index": tensor}) counts its images, not the
    first image's channels; a tuple or list counts by its first element (the inputs)."""
    if isinstance(batch, dict):
        tensors = [v for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
        batch = tensors[0] if tensors else next(iter(batch.values()))
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return len(batch) if hasattr(batch, "__len__") else 1


def _fmt(results: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) and math.isfinite(v) else f"{k} {v}" for k, v in results.items())
