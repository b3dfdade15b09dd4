"""GAN time to quality on ShapesWorld: FID of `cvtrain task=gan ...` after each epoch,
against the real-vs-real floor (train vs val images, as many as the val split) and
against the untrained generator, all in the ShapesWorld feature space the task uses.

    python scripts/gan_quality.py [OVERRIDE ...]      # default: task=gan (DCGAN, 32 px)

Measure with nothing else running on the machine: the figures are wall-clock times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def reference_fids(overrides: list[str]) -> dict[str, float]:
    """FID of real train images vs real val images (the floor) and of an untrained
    generator's images vs val (the ceiling), through the task's own evaluation."""
    from hydra import compose, initialize_config_dir

    from cvtrain.config.groups import CONF_DIR
    from cvtrain.config.rundir import register_resolvers
    from cvtrain.config.schema import register
    from cvtrain.engine.trainer import Trainer
    from cvtrain.metrics.generative import frechet_distance, statistics
    from cvtrain.registry import TASKS

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["task=gan", *overrides, "trainer.progress=none"])
    with tempfile.TemporaryDirectory() as tmp:
        task = TASKS.get("gan")(cfg)
        trainer = Trainer(cfg, task, Path(tmp))
        untrained = trainer.evaluate(trainer.eval_batches("val"))["fid"]
        val = task.build_dataset("val").fields["image"]
        train = task.build_dataset("train").fields["image"][: len(val)]
        floor = frechet_distance(*statistics(task._features_of(train)), *statistics(task._features_of(val)))
    return {"real_vs_real": float(floor), "untrained": float(untrained)}


def train_and_read(overrides: list[str]) -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "cvtrain", "task=gan", *overrides, f"hydra.run.dir={run}",
                   "trainer.progress=plain"]
        print("$", " ".join(command[2:]), flush=True)
        start = time.time()
        result = subprocess.run(command, capture_output=True, text=True)
        total = time.time() - start
        if result.returncode != 0:
            sys.exit(f"the run failed:\n{result.stderr[-3000:]}")
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()], total


def main() -> None:
    overrides = sys.argv[1:]
    refs = reference_fids(overrides)
    print(f"FID real train vs real val (floor): {refs['real_vs_real']:.2f}")
    print(f"FID untrained generator vs val:     {refs['untrained']:.2f}")
    records, total = train_and_read(overrides)
    for record in records:
        phase = f"  (FID at this phase's size {record['fid_phase']:.2f})" if "fid_phase" in record else ""
        print(f"epoch {record['epoch']:>3}  step {record['step']:>6}  FID {record['fid']:.2f}  KID {record['kid']:.4f}{phase}")
    best = min(records, key=lambda r: r["fid"])
    print(f"best FID {best['fid']:.2f} at epoch {best['epoch']}; whole command {total:.1f} s")


if __name__ == "__main__":
    main()
