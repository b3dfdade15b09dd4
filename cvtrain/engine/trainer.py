"""The one training loop: every task, from a classifier to a GAN, runs through it.

The trainer prepares the task's models (device, channels_last, DDP, torch.compile,
EMA, each as the task's module_policy says), builds one optimizer, LR schedule and loss
scaler per parameter group the task names, and runs epochs of
`task.train_step(batch, step)`. The task calls `step(name, loss)` for each optimizer
as often as it likes; the trainer does the rest (AMP scaling, gradient accumulation,
clipping, scheduler steps, the task's after_optimizer_step hook). At a phase change
(a progressive GAN growing) it rebuilds what depends on the models. Evaluation,
checkpoints and records happen on the trainer's side.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
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
from cvtrain.engine.optim import build_optimizer, build_scheduler, check_named, settings_for
from cvtrain.engine.precision import resolve as resolve_precision
from cvtrain.engine.progress import Progress
from cvtrain.engine.records import MetricsWriter, plot_curves, read_metrics
from cvtrain.engine.stopping import StopRequests, requeue_slurm_job, signal_name
from cvtrain.engine.task import Task
from cvtrain.errors import NonFiniteLoss, Stopped, UserError, unknown_choice

log = logging.getLogger("cvtrain")

# DDP's switch for sending rank 0's buffers before each forward: torch 2.10+ calls it
# forward_sync_buffers and deprecates broadcast_buffers.
_DDP_SYNC_BUFFERS = ("forward_sync_buffers" if "forward_sync_buffers" in
                     inspect.signature(DistributedDataParallel.__init__).parameters else "broadcast_buffers")


class Trainer:
    """Runs fit / evaluate for one task in one run folder (on every rank)."""

    def __init__(self, cfg, task: Task, run_dir: Path, env: dist.DistEnv | None = None):
        self.cfg, self.tcfg, self.task = cfg, cfg.trainer, task
        # read on every optimizer step, where an OmegaConf attribute costs ~30 us: plain copies
        self._grad_accum, self._clip_grad_norm = int(self.tcfg.grad_accum), float(self.tcfg.clip_grad_norm)
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
        self.phase = 0  # the task's phase (a progressive GAN's resolution); only grows
        self.total_steps = 1  # optimizer steps of the whole run, set once the loader is known
        self.batch_in_epoch = 0  # batches of the current epoch already trained (a mid-epoch last.pt)
        self.train_sums: dict[str, torch.Tensor] = {}  # logged losses since the last evaluation ...
        self.train_count = 0  # ... and the batches they sum over
        self.stops = StopRequests()
        self._nonfinite: dict[str, torch.Tensor] = {}  # per optimizer: a NaN/inf loss this cycle
        self._bad_steps = 0  # optimizer steps skipped in a row for a non-finite loss
        self._skipped: list[str] = []  # optimizers whose step this batch skipped (non-finite loss)
        # Per optimizer: its schedule, loss scaler and step count. A GAN's discriminator may
        # step three times a batch: its scaler and schedule follow its own steps.
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.optimizer_steps: dict[str, int] = {}
        self._others: dict[str, list[nn.Parameter]] = {}  # parameters of every other optimizer
        # Where the current batch stands in its accumulation cycle (set per batch).
        self._micro, self._boundary, self._stepped = 0, True, False

    # --- models ---------------------------------------------------------------
    def _build_models(self) -> None:
        torch.manual_seed(self.cfg.seed)  # the same initial weights on every rank
        models = self.task.build_models()
        self._place(models)
        self.task.models = models
        keep_ema = self.tcfg.ema_decay > 0
        self.ema = {n: self._ema_copy(m) for n, m in models.items() if keep_ema and self.task.module_policy(n).ema}
        self.train_modules: dict[str, nn.Module] = {}
        self._rewrap()
        torch.manual_seed(self.cfg.seed + self.env.rank)  # but rank-specific dropout

    def _place(self, modules: dict[str, nn.Module]) -> None:
        fmt = torch.channels_last if self.tcfg.channels_last else torch.contiguous_format
        for module in modules.values():
            module.to(self.device, memory_format=fmt)

    def _ema_copy(self, module: nn.Module) -> nn.Module:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(self.tcfg.ema_decay), use_buffers=True)

    def _rewrap(self) -> None:
        """(Re)wrap every module for training. The old DDP wrappers are dropped first:
        their gradient hooks must not outlive them on modules that grew."""
        self.train_modules.clear()
        gc.collect()
        self.train_modules.update({n: self._wrap(n, m) for n, m in self.task.models.items()})

    def _wrap(self, name: str, module: nn.Module) -> nn.Module:
        policy = self.task.module_policy(name)
        if self.env.enabled and any(p.requires_grad for p in module.parameters()):
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(
                module, device_ids=ids, find_unused_parameters=policy.find_unused_parameters,
                **{_DDP_SYNC_BUFFERS: policy.sync_buffers},
            )
        if self.tcfg.compile and policy.compile:
            module = torch.compile(module)
        return module

    def eval_modules(self) -> dict[str, nn.Module]:
        """The modules evaluation uses: the EMA copy where one is kept, else the module."""
        return {n: self.ema[n].module if n in self.ema else m for n, m in self.task.models.items()}

    # --- phases ---------------------------------------------------------------
    def _enter_phase(self, phase: int) -> bool:
        """Grow the models to `phase` (one phase at a time) and rebuild what depends on
        them: wrappers, EMA copies' new layers, optimizers. True when the phase changed."""
        if phase == self.phase:
            return False
        if phase < self.phase:
            raise UserError(f"{type(self.task).__name__}.phase_at went back from phase {self.phase} to {phase} at "
                            f"epoch {self.epoch + 1}; phases only grow (resume with the config the run was trained with).")
        for step_to in range(self.phase + 1, phase + 1):
            self.phase = self.task.phase = step_to
            self._grow(step_to)
        self._rewrap()
        if self.optimizers:
            self._make_optimizers()
        log.info("phase %d from epoch %d", phase, self.epoch + 1)
        return True

    def _grow(self, phase: int) -> None:
        """The task grows its modules and their EMA copies; an EMA copy's new layers start
        from the training weights, not from a second random draw."""
        had = {n: set(e.module.state_dict()) for n, e in self.ema.items()}
        self.task.enter_phase(phase, self.task.models)
        self._place(self.task.models)
        if self.ema:
            self.task.enter_phase(phase, {n: e.module for n, e in self.ema.items()})
            self._place({n: e.module for n, e in self.ema.items()})
        for name, ema in self.ema.items():
            trained = self.task.models[name].state_dict()
            new = {k: trained[k] for k in ema.module.state_dict() if k not in had[name]}
            ema.module.load_state_dict(new, strict=False)

    # --- data -----------------------------------------------------------------
    def loader(self, split: str, train: bool):
        dcfg = self.cfg.dataset
        return build_loader(
            self.task.build_dataset(split),
            batch_size=dcfg.batch_size if train else dcfg.eval_batch_size,
            train=train, rank=self.env.rank, world=self.env.world_size, seed=self.cfg.seed,
            num_workers=dcfg.num_workers, collate=self.task.collate(), pin_memory=self.device.type == "cuda",
        )

    def eval_batches(self, split: str):
        """What evaluation iterates for `split`: the task's own batches when it has them
        (word2vec's analogy queries, a generator's noise seeds), else a data loader."""
        own = self.task.eval_batches(split, self.env)
        return own if own is not None else self.loader(split, train=False)

    # --- optimization ---------------------------------------------------------
    def _build_optimizers(self, steps_per_epoch: int) -> None:
        total = self.tcfg.max_steps if self.tcfg.max_steps > 0 else self.tcfg.epochs * steps_per_epoch
        self.total_steps = max(1, total)
        self._make_optimizers()

    def _make_optimizers(self) -> None:
        """One optimizer per name the task gives, each from optimizer.* with optimizers.<name>.*
        on top. Rebuilt at a phase change: the state of parameters that stay is carried over,
        and each schedule goes on from its own step count; loss scalers are kept."""
        groups = self.task.parameter_groups()
        named = self.cfg.get("optimizers") or {}
        check_named(named, groups)
        names, sparse = self._parameter_names()
        previous, self.optimizers = self.optimizers, {}
        for name, params in groups.items():
            optimizer = build_optimizer(params, settings_for(name, self.cfg.optimizer, named), names, sparse)
            if name in previous:
                _carry_state(previous[name], optimizer)
            self.optimizers[name] = optimizer
            own_steps = max(1, math.ceil(self.total_steps * self.task.steps_per_training_step(name)))
            done = self.optimizer_steps.setdefault(name, 0)
            self.schedulers[name] = build_scheduler(optimizer, self.cfg.scheduler, own_steps, done)
            if name not in self.scalers:
                self.scalers[name] = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_scaler)
        owned = {name: [p for group in opt.param_groups for p in group["params"]] for name, opt in self.optimizers.items()}
        self._others = {}
        for name, params in owned.items():
            mine = {id(p) for p in params}
            self._others[name] = [p for other, ps in owned.items() if other != name for p in ps if id(p) not in mine]

    def _parameter_names(self) -> tuple[dict[int, str], set[int]]:
        """Parameter id -> "model.layer.weight" (for errors), and the ids of parameters
        whose gradients are sparse (nn.Embedding/EmbeddingBag(sparse=True))."""
        names, sparse = {}, set()
        for model_name, model in self.task.models.items():
            names.update({id(p): f"{model_name}.{n}" for n, p in model.named_parameters()})
            sparse.update(id(m.weight) for m in model.modules()
                          if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse)
        return names, sparse

    def step(self, name: str | tuple[str, ...], loss: torch.Tensor) -> None:
        """Backward `loss` into the parameters of optimizer `name` only; step it at the end
        of an accumulation cycle. A tuple of names backpropagates one loss into several
        optimizers (word2vec's sparse embeddings and dense head) with one backward pass;
        they then share the first one's loss scaler."""
        names = (name,) if isinstance(name, str) else tuple(name)
        for each in names:
            if each not in self.optimizers:
                raise unknown_choice("optimizer name", each, self.optimizers)
        infinite = ~torch.isfinite(loss.detach()).all()  # no sync here: checked once per cycle
        for each in names:
            self._nonfinite[each] = self._nonfinite[each] | infinite if each in self._nonfinite else infinite
        scaler = self.scalers[names[0]]
        with self.precision.without_autocast(), _kept_apart(self._outside(names)):
            scaler.scale(loss / self._grad_accum).backward()
        if not self._boundary:
            return
        stepped = [n for n in names if not self._cycle_was_nonfinite(n)]  # every name: each one syncs
        for each in names:
            if each in stepped:
                self._apply(each, scaler)
            else:
                self.optimizers[each].zero_grad(set_to_none=True)  # never apply a NaN update
        if stepped:
            scaler.update()
        for each in stepped:
            self.schedulers[each].step()
            self.optimizers[each].zero_grad(set_to_none=True)
            self.optimizer_steps[each] += 1
            self._stepped = True
            with torch.no_grad():
                self.task.after_optimizer_step(each)

    def _apply(self, name: str, scaler: torch.amp.GradScaler) -> None:
        """Clip (after unscaling) and step optimizer `name`; the scaler skips a step whose
        gradients overflowed in float16."""
        optimizer = self.optimizers[name]
        if self._clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self._clip_grad_norm)
        scaler.step(optimizer)

    def _outside(self, names: tuple[str, ...]) -> list[nn.Parameter]:
        """The parameters of every optimizer but `names`: a backward must leave them alone."""
        if len(names) == 1:
            return self._others[names[0]]
        mine = {id(p) for n in names for group in self.optimizers[n].param_groups for p in group["params"]}
        outside = {id(p): p for n in names for p in self._others[n] if id(p) not in mine}
        return list(outside.values())

    def _cycle_was_nonfinite(self, name: str) -> bool:
        """Whether any rank saw a NaN/inf loss for `name` in this accumulation cycle
        (every rank must agree, or one would step and the other not)."""
        flag = self._nonfinite.pop(name).to(torch.int32)
        if self.env.enabled:
            dist.all_reduce_sum(flag)
        if not flag.item():
            return False
        self._skipped.append(name)
        return True

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
        train_loader, val_loader = self.loader("train", True), self.eval_batches("val")
        steps_per_epoch = max(1, train_loader.batch_sampler.batches_per_epoch() // self.tcfg.grad_accum)
        self._build_optimizers(steps_per_epoch)
        self._maybe_resume()
        loaders_phase = 0  # the phase the loaders were built in
        if self._done() and self.global_step > 0:  # a requeue or resume of a finished run
            log.info("the run in %s is already complete (epoch %d, step %d)", self.run_dir, self.epoch, self.global_step)
            self.writer.close()
            return _last_record(self.run_dir)
        log.info(
            "training %s on %s (%s) for %s, %d step(s) per epoch, %d process(es); run folder %s",
            self.cfg.model.name, self.device, self.precision.name,
            f"{self.tcfg.max_steps} steps" if self.tcfg.max_steps > 0 else f"{self.tcfg.epochs} epochs",
            steps_per_epoch, self.env.world_size, self.run_dir,
        )
        results: dict[str, float] = {}
        with self.stops:
            while not self._done():
                self._enter_phase(self.task.phase_at(self.epoch))
                if loaders_phase != self.phase:  # a phase may train on other data (a larger resolution)
                    train_loader, val_loader, loaders_phase = self.loader("train", True), self.eval_batches("val"), self.phase
                results = self._train_epoch(train_loader, val_loader) or results
                self.epoch += 1
                if self._eval_due_at_epoch_end():
                    results = self._validate(val_loader)
                self._save("last")
                self._stop_if_requested(saved=self.tcfg.save_last)
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
        start = self.batch_in_epoch  # > 0 when resuming from a mid-epoch last.pt
        sampler = loader.batch_sampler
        sampler.set_epoch(self.epoch, start)
        total = sampler.batches_per_epoch()
        progress = Progress(self.tcfg.progress, self.env.is_main)
        progress.start(f"epoch {self.epoch + 1}", total)
        progress.advance(start)
        sums: dict[str, torch.Tensor] = {}
        count, samples, results, accum = 0, 0, None, self.tcfg.grad_accum
        for i, batch in enumerate(loader, start=start):
            self._micro = i % accum
            self._boundary = self._micro == accum - 1 or i == total - 1
            self._stepped, self._skipped = False, []
            batch = move_batch(batch, self.device, self.tcfg.channels_last)
            self.task.global_step, self.task.epoch = self.global_step, self.epoch  # for alternating updates, fade-ins
            with self._sync_context(), self.precision.autocast():
                logs = self.task.train_step(batch, self.step)
            samples += _batch_size(batch) * self.env.world_size
            logs = {key: value.detach().float() for key, value in logs.items()}
            if not self._skip_nonfinite(logs):
                _add(sums, logs)
                _add(self.train_sums, logs)
                count, self.train_count = count + 1, self.train_count + 1
            if self._boundary:
                self.batch_in_epoch = i + 1
            if self._stepped:
                results = self._after_optimizer_step(val_loader) or results
            values = None
            if self._boundary and (self.global_step % self.tcfg.log_every == 0 or i == total - 1):
                values, sums, count = self._log_values(sums, count), {}, 0
            progress.advance(1, values, samples)
            if self._boundary:
                self._stop_if_requested(saved=False, progress=progress)
            if self._done():
                break
        progress.stop()
        self.batch_in_epoch = 0  # the epoch is over: the next one starts at its first batch
        return results

    def _skip_nonfinite(self, logs: dict[str, torch.Tensor]) -> bool:
        """After a step skipped for a NaN/inf loss: go on (up to trainer.nonfinite_patience
        skipped steps in a row; True: leave this batch out of the logged means) or stop
        with a line that names the loss and the fixes."""
        if not self._boundary:
            return False
        if not self._skipped:
            self._bad_steps = 0
            return False
        self._bad_steps += 1
        bad = [k for k, v in logs.items() if not math.isfinite(float(v))] or [
            f"the loss of optimizer '{name}' on another rank" for name in self._skipped]
        where = f"step {self.global_step + 1} (epoch {self.epoch + 1})"
        if self._bad_steps <= self.tcfg.nonfinite_patience:
            log.warning("skipped %s: non-finite %s (%d in a row)", where, ", ".join(bad), self._bad_steps)
            return True
        saved = [p.name for p in (self.run_dir / "checkpoints").glob("*.pt")]
        kept = f"; {' and '.join(sorted(saved))} keep the last finite weights" if saved else ""
        raise NonFiniteLoss(
            f"the loss became non-finite ({', '.join(f'{k}={float(logs[k])}' if k in logs else k for k in bad)}) at "
            f"{where}{kept}. Lower optimizer.lr (now {self.cfg.optimizer.lr:g}), clip gradients "
            "(trainer.clip_grad_norm=1.0), use trainer.precision=fp32, or allow skips with trainer.nonfinite_patience=N."
        )

    def _stop_if_requested(self, saved: bool, progress: Progress | None = None) -> None:
        """Honour a signal on every rank at the same step: save last.pt (unless just saved),
        requeue under SLURM, and leave with the signal's conventional exit status."""
        signum = self.stops.agreed(self.device, self.env.enabled)
        if not signum:
            return
        if progress is not None:
            progress.stop()
        if not saved:
            self._save("last", force=True)
        requeued = ""
        if self.env.is_main and self.tcfg.slurm_requeue:
            requeued = requeue_slurm_job(signum, self.stops.previous_handler(signum))
        self.writer.close()
        where = (f"epoch {self.epoch + 1}, batch {self.batch_in_epoch}" if self.batch_in_epoch
                 else f"the end of epoch {self.epoch}")
        then = requeued or f"continue with the same command and resume={self.run_dir}"
        message = (f"stopped by {signal_name(signum)} at {where} (step {self.global_step}); "
                   f"saved {self.run_dir / 'checkpoints' / 'last.pt'}; {then}.")
        raise Stopped(message if self.env.is_main else "", 128 + signum)

    def _after_optimizer_step(self, val_loader) -> dict[str, float] | None:
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

    def _train_record(self) -> dict[str, float]:
        """The mean of each logged loss since the last evaluation (over all ranks), as
        train_<name>: metrics.jsonl shows how training went, not only validation."""
        if not self.train_count:
            return {}
        keys = sorted(self.train_sums)
        count = torch.tensor(float(self.train_count), device=self.device)  # beside the sums, on the GPU too
        totals = torch.stack([self.train_sums[k].to(self.device) for k in keys] + [count])
        totals = dist.all_reduce_sum(totals).cpu()
        self.train_sums, self.train_count = {}, 0
        return {f"train_{k}": float(v / totals[-1]) for k, v in zip(keys, totals[:-1])}

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
        progress.start(description, len(loader) if hasattr(loader, "__len__") else None)
        for batch in loader:
            batch = move_batch(batch, self.device, self.tcfg.channels_last)
            with self.precision.autocast():
                self.task.eval_step(batch)
            progress.advance(1)
        progress.stop()
        return self.task.finish_eval()

    def _validate(self, loader) -> dict[str, float]:
        t0 = time.perf_counter()
        train = self._train_record()
        results = self.evaluate(loader, f"val {self.epoch}")
        name, mode = self.task.monitor()
        if name not in results:
            raise UserError(f"task.monitor={name} is not a metric of this task; valid: {', '.join(sorted(results))}.")
        # Rank 0's decision on every rank: a task whose metrics differ by rank (not reduced)
        # must not make one rank save best.pt, a collective, and the others not.
        improved = dist.broadcast_object(
            self.best is None or (results[name] > self.best if mode == "max" else results[name] < self.best))
        if improved:
            self.best, self.best_epoch = results[name], self.epoch
        record = {"epoch": self.epoch, "step": self.global_step, **results, **train,
                  "eval_seconds": time.perf_counter() - t0}
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
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "trainer": {
                "phase": self.phase, "epoch": self.epoch, "step": self.global_step, "best": self.best, "best_epoch": self.best_epoch,
                "batch_in_epoch": self.batch_in_epoch, "optimizer_steps": dict(self.optimizer_steps),
                "train_sums": {k: v.cpu() for k, v in self.train_sums.items()}, "train_count": self.train_count,
            },
            "rng": rng,  # one entry per rank
            "config": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
            "task": self.task.state_dict(),
        }

    def _save(self, which: str, force: bool = False) -> None:
        """Write checkpoints/<which>.pt from rank 0 (every rank takes part: RNG states).
        Non-finite weights are never written: the file keeps the last finite state."""
        self._check_finite_weights()
        rng = dist.gather_objects(ckpt.rng_state())  # collective: every rank takes part
        if self.env.is_main and (which != "last" or self.tcfg.save_last or force):
            ckpt.save_atomic(self._state(rng), self.run_dir / "checkpoints" / f"{which}.pt")
        dist.barrier()

    def _check_finite_weights(self) -> None:
        for name, module in self.task.models.items():
            tensors = [t for t in module.state_dict().values() if t.is_floating_point()]
            if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
                raise NonFiniteLoss(
                    f"the weights of '{name}' became non-finite by step {self.global_step} (epoch {self.epoch + 1}); "
                    "they were not saved, and the checkpoints keep the last finite state. Lower optimizer.lr, "
                    "clip gradients (trainer.clip_grad_norm=1.0) or use trainer.precision=fp32."
                )

    def _maybe_resume(self) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        if not path.is_file():
            return
        state = ckpt.load(path)
        self.load_weights(state)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])
            scaler_state = state["scalers"][name] if "scalers" in state else state["scaler"]  # format 1: one scaler
            self.scalers[name].load_state_dict(scaler_state)
        t = state["trainer"]
        self.epoch, self.global_step, self.best, self.best_epoch = t["epoch"], t["step"], t["best"], t["best_epoch"]
        self.batch_in_epoch = t.get("batch_in_epoch", 0)
        self.optimizer_steps.update(t.get("optimizer_steps", {}))
        self.train_sums = {k: v.to(self.device) for k, v in t.get("train_sums", {}).items()}
        self.train_count = t.get("train_count", 0)
        self._restore_rng(state["rng"])
        inside = f", batch {self.batch_in_epoch} of epoch {self.epoch + 1}" if self.batch_in_epoch else ""
        log.info("resumed from %s at epoch %d, step %d%s", path, self.epoch, self.global_step, inside)

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
        """Models, EMA and task state from a loaded checkpoint (grown to its phase first);
        mismatches are user errors."""
        self.task.load_state_dict(state.get("task", {}))
        self._enter_phase(state.get("trainer", {}).get("phase", 0))
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


@contextlib.contextmanager
def _kept_apart(others: list[nn.Parameter]):
    """Keep a backward pass off the gradients of `others` (another optimizer's parameters):
    a generator's loss flows through the discriminator, but what it would add there must not
    join the discriminator's own accumulated gradients. Swapping the .grad references out
    and back costs no copy."""
    if not others:
        yield
        return
    kept = [p.grad for p in others]
    for p in others:
        p.grad = None
    try:
        yield
    finally:
        for p, grad in zip(others, kept):
            p.grad = grad


def _carry_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> None:
    """Adam's moments (and any per-parameter state) of the parameters both optimizers
    hold move to the rebuilt one; new parameters start fresh."""
    for group in new.param_groups:
        for param in group["params"]:
            if param in old.state:
                new.state[param] = old.state[param]


def _add(sums: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    for key, value in values.items():
        sums[key] = sums[key] + value if key in sums else value


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
