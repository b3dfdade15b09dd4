"""Training throughput: cvtrain's loop against a plain hand-written PyTorch loop.

Both train the same model (built by the same registered builder, from the same seed)
on the same in-memory ShapesWorld batches with the same optimizer, in one process, in
alternating rounds so that machine noise hits both alike. The plain loop is what one
writes by hand: shuffle, index a batch, normalize, forward, loss, backward, step.
cvtrain's side is the trainer's own epoch loop (`Trainer._train_epoch`), with its
batch moves, autocast and DDP contexts, `step()` bookkeeping, loss logging and
progress, and nothing else (no evaluation or checkpoints, which a hand loop would add
too).

    python scripts/bench_throughput.py [--rounds 5] [OVERRIDE ...]
    python scripts/bench_throughput.py --task diffusion [--rounds 5] [OVERRIDE ...]

Prints samples/s of each and the ratio cvtrain / plain (1.0 = no overhead).

--task diffusion compares `cvtrain task=diffusion` (the DDPM U-Net of model=ddpm) with
the DDPM loop written by hand: ᾱ from the linear β schedule, random t, x_t = √ᾱ x_0 +
√(1-ᾱ) ε, labels dropped with task.p_uncond, MSE to ε, and what the config asks of the
trainer done by hand too (channels_last, gradient clipping, an EMA of the weights, the
autocast of trainer.precision, torch.compile with trainer.compile).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from cvtrain.config.groups import CONF_DIR
    from cvtrain.config.rundir import register_resolvers
    from cvtrain.config.schema import register

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=overrides)


def make_trainer(cfg, run_dir: Path):
    from cvtrain.engine.trainer import Trainer
    from cvtrain.registry import TASKS

    task = TASKS.get(cfg.task.name)(cfg)
    trainer = Trainer(cfg, task, run_dir)
    loader = trainer.loader("train", train=True)
    trainer._build_optimizers(len(loader))
    return trainer, loader


def cvtrain_epoch(trainer, loader) -> tuple[int, float]:
    start = time.perf_counter()
    trainer._train_epoch(loader, None)
    trainer.epoch += 1
    _sync(trainer.device)
    return len(loader) * loader.batch_sampler.global_batch, time.perf_counter() - start


def plain_epoch(model, optimizer, data, batch_size: int, device, seed: int) -> tuple[int, float]:
    """The loop people write by hand, on the same tensors."""
    from cvtrain.tasks.images import normalize

    images, labels = data.fields["image"], data.fields["label"]
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    steps = len(labels) // batch_size
    for b in range(steps):
        idx = order[b * batch_size : (b + 1) * batch_size]
        x, y = images[idx].to(device, non_blocking=True), labels[idx].to(device, non_blocking=True)
        loss = loss_fn(model(normalize(x)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return steps * batch_size, time.perf_counter() - start


def plain_diffusion_epoch(model, optimizer, data, batch_size: int, device, seed: int, cfg, ema,
                          autocast=contextlib.nullcontext) -> tuple[int, float]:
    """DDPM's training loop as one writes it from Ho et al.'s Algorithm 1, on the same tensors
    (under the same autocast as cvtrain's, e.g. bf16 on a CPU or GPU)."""
    tcfg = cfg.trainer
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64) * (1000 / cfg.model.timesteps)
    alpha_bar = torch.cumprod(1 - betas, 0)[: cfg.model.timesteps].float().to(device)
    images, labels = data.fields["image"], torch.as_tensor(data.fields["label"])
    null, fmt = len(data.class_names), torch.channels_last if tcfg.channels_last else torch.contiguous_format
    params = list(model.parameters())
    ema_params = list(ema.parameters()) if ema is not None else []
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    steps = len(labels) // batch_size
    for b in range(steps):
        idx = order[b * batch_size : (b + 1) * batch_size]
        x0 = (images[idx].to(device).float() / 127.5 - 1).contiguous(memory_format=fmt)
        y = labels[idx].to(device)
        y = torch.where(torch.rand(len(y), device=device) < cfg.task.p_uncond, torch.full_like(y, null), y)
        t = torch.randint(0, len(alpha_bar), (len(x0),), device=device)
        ab = alpha_bar[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(x0)
        with autocast():
            out = model(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, y)
        loss = torch.nn.functional.mse_loss(out.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.clip_grad_norm)
        optimizer.step()
        if ema_params:
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1 - tcfg.ema_decay)
    _sync(device)
    return steps * batch_size, time.perf_counter() - start


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--task", choices=["classification", "diffusion"], default="classification")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=resnet18 trainer.device=cuda")
    args = parser.parse_args()
    import tempfile

    from cvtrain.engine.optim import build_optimizer
    from cvtrain.engine.records import setup_logging

    # epochs only sizes the LR schedule here: the rounds below decide how long each side runs.
    overrides = [f"task={args.task}", "trainer.progress=none", "logger.images=false", "trainer.epochs=1000",
                 *args.overrides]
    cfg = compose(overrides)
    setup_logging(None, is_main=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, loader = make_trainer(cfg, Path(tmp))
        data = trainer.task.build_dataset("train")
        torch.manual_seed(cfg.seed)
        plain_model = trainer.task.build_models()["model"].to(trainer.device)
        plain_opt = build_optimizer(plain_model.parameters(), cfg.optimizer)
        batch = cfg.dataset.batch_size
        if args.task == "diffusion":
            import copy

            if cfg.trainer.channels_last:
                plain_model = plain_model.to(memory_format=torch.channels_last)
            ema = copy.deepcopy(plain_model) if cfg.trainer.ema_decay > 0 else None
            if cfg.trainer.compile:  # as the trainer does: the same parameters, a compiled forward
                plain_model = torch.compile(plain_model)

            def loop(model, optimizer, data, batch_size, device, seed):
                return plain_diffusion_epoch(model, optimizer, data, batch_size, device, seed, cfg, ema,
                                             trainer.precision.autocast)
        else:
            loop = plain_epoch
        print(f"model={cfg.model.name} device={trainer.device} batch={batch} samples/epoch={len(loader) * batch} "
              f"threads={torch.get_num_threads()}")
        loop(plain_model, plain_opt, data, batch, trainer.device, 0)  # warm-up both
        cvtrain_epoch(trainer, loader)
        plain_rates, cvtrain_rates = [], []
        for r in range(args.rounds):
            n, t = loop(plain_model, plain_opt, data, batch, trainer.device, r + 1)
            plain_rates.append(n / t)
            n, t = cvtrain_epoch(trainer, loader)
            cvtrain_rates.append(n / t)
            print(f"round {r + 1}: plain {plain_rates[-1]:.0f} samples/s, cvtrain {cvtrain_rates[-1]:.0f} samples/s")
    plain, ours = statistics.median(plain_rates), statistics.median(cvtrain_rates)
    print(f"median: plain {plain:.0f} samples/s, cvtrain {ours:.0f} samples/s, ratio {ours / plain:.3f}")


if __name__ == "__main__":
    main()
