"""Shared fixtures: a session-wide ShapesWorld cache and ways to run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small ShapesWorld splits: enough to learn from, quick to render.
SMALL_DATA = ["dataset.num_train=1024", "dataset.num_val=256", "dataset.num_test=256"]


@pytest.fixture(scope="session", autouse=True)
def shapes_cache(tmp_path_factory) -> Path:
    """One ShapesWorld cache for the whole session, shared with subprocesses."""
    cache = tmp_path_factory.getbasetemp() / "shapes-cache"
    cache.mkdir(exist_ok=True)
    os.environ["CVTRAIN_CACHE"] = str(cache)
    return cache


def run_cli(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m cvtrain ARGS` in a subprocess, as a user runs it."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env.pop("CVTRAIN_RUN_STAMP", None)
    return subprocess.run(
        [sys.executable, "-m", "cvtrain", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def train_then_predict(train_args: list[str], predict_args: list[str], tmp_path: Path) -> Path:
    """`cvtrain TRAIN_ARGS` for one step into tmp_path/run, then `cvtrain mode=predict` of
    its last.pt with PREDICT_ARGS into tmp_path/predict (returned); both must succeed."""
    run, out = tmp_path / "run", tmp_path / "predict"
    done = run_cli([*train_args, "trainer.max_steps=1", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli(["mode=predict", f"ckpt={run / 'checkpoints' / 'last.pt'}", *predict_args, f"hydra.run.dir={out}"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def cli_in_process(args: list[str]) -> None:
    """`cvtrain ARGS` in this process (faster: torch is already imported)."""
    from cvtrain.cli import main

    os.environ.pop("CVTRAIN_RUN_STAMP", None)
    main(args)


def scene_photos(folder: Path, count: int, image_size: int = 64) -> Path:
    """The first `count` ShapesWorld test scenes as PNG files p0.png, p1.png, ... in
    `folder`: inputs for mode=predict."""
    from PIL import Image

    from cvtrain.data.shapesworld import ShapesWorldSpec, load_split

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(load_split("test", max(count, 32), ShapesWorldSpec(image_size=image_size)).images[:count]):
        Image.fromarray(image).save(folder / f"p{i}.png")
    return folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def compose_cfg(overrides: list[str]):
    """The composed config for `overrides`, as the CLI would see it."""
    from hydra import compose, initialize_config_dir

    from cvtrain.config.groups import CONF_DIR
    from cvtrain.config.rundir import register_resolvers
    from cvtrain.config.schema import register

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def _gloo_rank(body, rank: int, world: int, port: int, out: str) -> None:
    """One spawned rank: join a gloo group on 127.0.0.1, run `body(rank)`, save its dict."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from cvtrain.worker_exit import run_then_exit

    def work() -> None:
        torch.set_num_threads(1)
        dist.init_process_group(backend="gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=60))
        try:
            Path(out).write_text(json.dumps(body(rank)))
            dist.barrier()
        finally:
            dist.destroy_process_group()

    run_then_exit(work)  # as cvtrain's workers leave: no SIGABRT from gloo at interpreter teardown


def run_gloo_ranks(body, tmp_path: Path, world: int = 2, timeout: float = 90) -> list[dict]:
    """Run `body(rank) -> dict` (a module-level function) in `world` spawned processes that
    form a gloo group, and return each rank's dict, in rank order."""
    import multiprocessing

    from cvtrain.engine.launcher import free_port

    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    outs = [tmp_path / f"rank{r}.json" for r in range(world)]
    procs = [ctx.Process(target=_gloo_rank, args=(body, r, world, port, str(outs[r])), daemon=True)
             for r in range(world)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(timeout=timeout)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    assert [p.exitcode for p in procs] == [0] * world, "a rank failed or hung (see its output above)"
    return [json.loads(out.read_text()) for out in outs]


def run_score_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`cvtrain-score ARGS` in this process: (exit status, stdout, stderr)."""
    from cvtrain.score_cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def flat_state(tree, prefix: str = "") -> dict:
    """A checkpoint's nested dicts and lists of tensors and numbers as {"a.b.0.c": tensor},
    for bit-for-bit comparisons of whole runs."""
    import torch

    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flat_state(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in flat_state(sub, f"{prefix}{i}.").items()}
    return {prefix: torch.as_tensor(tree)} if isinstance(tree, (torch.Tensor, int, float)) else {}
