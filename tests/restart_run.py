"""A toy run under cvtrain's launcher, for the restart tests (not collected by pytest).

`python restart_run.py RUN_DIR MAX_RESTARTS` launches two workers of the `crash_once`
toy task as `trainer.devices=2` does; each worker is `python restart_run.py --worker
RUN_DIR`, which registers the toy task and enters cvtrain's own worker code.
"""

from __future__ import annotations

import sys
from pathlib import Path

OVERRIDES = ["optimizer=sgd", "optimizer.lr=0.05", "scheduler=none", "dataset.batch_size=8", "trainer.epochs=3",
             "trainer.progress=plain", "trainer.log_every=1", "trainer.num_threads=1", "trainer.deterministic=true",
             "logger.images=false", "trainer.devices=2"]


def launch(run_dir: Path, max_restarts: int) -> None:
    from conftest import compose_cfg

    from cvtrain.app import save_config
    from cvtrain.cli import run_reporting_errors
    from cvtrain.engine.launcher import launch_workers

    cfg = compose_cfg([*OVERRIDES, f"trainer.max_restarts={max_restarts}"])
    cfg.task.name = "crash_once"
    save_config(cfg, run_dir)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(run_dir)]
    run_reporting_errors(lambda: launch_workers(command, 2, max_restarts=max_restarts))


def worker(run_dir: str) -> None:
    from toy_tasks import CrashOnce

    from cvtrain.app import worker_main
    from cvtrain.registry import TASKS

    TASKS.register("crash_once")(CrashOnce)
    worker_main([run_dir])


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        launch(Path(sys.argv[1]), int(sys.argv[2]))
