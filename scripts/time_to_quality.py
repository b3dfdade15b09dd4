"""Time to quality: wall-clock seconds from `cvtrain ...` to a target validation score.

Runs the real command in a subprocess (start-up, data loading and evaluation included),
then reads the run's metrics.jsonl and train.log time stamps.

    python scripts/time_to_quality.py [--metric acc1] [--target 0.95] [--keep DIR] [OVERRIDE ...]

Defaults measure the README's claim: `cvtrain task=classification` reaching 95 %
validation accuracy on ShapesWorld.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metric", default="acc1")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--keep", type=Path, default=None,
                        help="run in this folder and keep it (checkpoints for later evaluation or predict)")
    parser.add_argument("overrides", nargs="*", default=["task=classification"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.keep.resolve() if args.keep else Path(tmp) / "run"
        command = [sys.executable, "-m", "cvtrain", *args.overrides, f"hydra.run.dir={run}", "trainer.progress=plain"]
        start = time.time()
        total = run_command(command)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        # metrics.jsonl has no clock: train.log's time stamps say when each evaluation ended.
        stamps = eval_times(run / "train.log")
    reached = None
    for record, stamp in zip(records, stamps):
        if record.get(args.metric, float("-inf")) >= args.target:
            reached = (record, stamp - start)
            break
    best = max(r[args.metric] for r in records)
    print(f"total wall time {total:.1f} s; best {args.metric} {best:.4f}")
    if reached:
        record, seconds = reached
        print(f"{args.metric} >= {args.target} at epoch {record['epoch']} (step {record['step']}) "
              f"after {seconds:.1f} s of wall time")
    else:
        print(f"{args.metric} never reached {args.target}")


def run_command(command: list[str], what: str = "the run") -> float:
    """Run `python -m cvtrain ...` (printed first); its wall time, or exit with its errors."""
    print("$", " ".join(command[2:]), flush=True)
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{what} failed:\n{result.stderr[-3000:]}")
    return time.time() - start


def eval_times(log: Path) -> list[float]:
    """Wall-clock times of the 'val epoch' lines in train.log."""
    times = []
    for line in log.read_text().splitlines():
        if " val epoch " in line:
            stamp = " ".join(line.split(" ")[:2]).split(",")[0]
            times.append(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")))
    return times


if __name__ == "__main__":
    main()
