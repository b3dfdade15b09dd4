"""Translation quality on ShapesWorld: pix2pix's FCN-score against the real images' over
wall time, and CycleGAN's FID both ways and cycle PSNR.

    python scripts/translation_quality.py --out translation_out [--only pix2pix|cyclegan]
        [--every STEPS] [--pix2pix OVERRIDE ...] [--cyclegan OVERRIDE ...] [OVERRIDE ...]

1. The scorers are warmed first (the ShapesWorld feature network of FID and the
   FCN-score's segmenter train once per machine, then load from the cache), and timed
   apart: the issue's clock is the training command's.
2. `cvtrain task=translation model=pix2pix` (ShapesWorld labels -> image) runs with an
   evaluation every `--every` optimizer steps; each evaluation's FCN-score mIoU on the
   generated images, on the real images and their ratio are printed with the wall time
   since the command started (train.log's time stamps), and the first time the ratio
   reaches --target (0.7).
3. `cvtrain task=translation model=cyclegan` (flat -> striped renderings) likewise: FID
   A -> B and B -> A, and the PSNR of both cycles, beside the real-vs-real FID of each
   domain (train against val images: the floor a perfect generator would reach).

Each run's folder (checkpoints, metrics.jsonl, images/triptychs*.png) is kept under
--out; the last triptychs are copied to --out/<model>_triptychs*.png for the README.
Trailing overrides go to both runs. Measure with nothing else running on the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from time_to_quality import eval_times, run_command  # scripts/, the folder of this script

COLUMNS = {
    "pix2pix": ("fcn_miou", "fcn_miou_real", "fcn_miou_ratio", "fcn_pixel_acc", "fid", "psnr"),
    "cyclegan": ("fid_ab", "fid_ba", "cycle_a_psnr", "cycle_b_psnr", "cycle_psnr"),
}


def compose(model: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from cvtrain.config.groups import CONF_DIR
    from cvtrain.config.rundir import register_resolvers
    from cvtrain.config.schema import register

    register()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=["task=translation", f"model={model}", *overrides])


def warm_scorers(model: str, overrides: list[str]) -> dict[str, float]:
    """Build (train once, or load) what the run's evaluations score with; for CycleGAN also
    the real-vs-real FID floor of each domain. Returns the floors, and prints the time."""
    from cvtrain.registry import TASKS
    from cvtrain.tasks.generated_scores import FrechetScore, feature_extractor

    cfg = compose(model, overrides)
    start = time.time()
    features = feature_extractor(cfg.dataset.image_size, "cpu")
    floors = {}
    task = TASKS.get("translation")(cfg)
    if model == "pix2pix" and cfg.task.fcn_score:
        task.fcn_score()
    if model == "cyclegan":
        val, train = task.build_dataset("val"), task.build_dataset("train")
        for key, domain in (("fid_ab", "b"), ("fid_ba", "a")):
            real = val.fields[domain]
            score = FrechetScore(features)
            score.update(real, train.fields[domain][: len(real)])
            floors[key] = score.compute()
    print(f"[{model}] scorers ready in {time.time() - start:.0f} s"
          + "".join(f"; real-vs-real {k} {v:.2f}" for k, v in floors.items()), flush=True)
    return floors


def train(model: str, run: Path, overrides: list[str], every: int) -> tuple[list[dict], list[float], float]:
    """The run's evaluations, each one's wall time since the command started, and the command's."""
    command = [sys.executable, "-m", "cvtrain", "task=translation", f"model={model}", *overrides,
               f"trainer.val_every_steps={every}", f"hydra.run.dir={run}", "trainer.progress=plain"]
    start = time.time()
    total = run_command(command, f"the {model} run")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return records, [t - start for t in eval_times(run / "train.log")], total


def report(model: str, records: list[dict], seconds: list[float], total: float, target: float) -> dict:
    columns = [c for c in COLUMNS[model] if c in records[-1]]
    print(f"{'step':>6} {'wall s':>7} " + " ".join(f"{c:>15}" for c in columns))
    for record, wall in zip(records, seconds):
        print(f"{record['step']:>6} {wall:>7.0f} " + " ".join(f"{record[c]:>15.4f}" for c in columns))
    summary = {"records": records, "wall_seconds": seconds, "command_seconds": total}
    if "fcn_miou_ratio" in columns:
        reached = [(r, s) for r, s in zip(records, seconds) if r["fcn_miou_ratio"] >= target]
        if reached:
            record, wall = reached[0]
            print(f"FCN-score mIoU reached {target:.2f} x the real images' at step {record['step']} after {wall:.0f} s")
            summary["reached"] = {"step": record["step"], "seconds": wall}
        else:
            print(f"FCN-score mIoU ratio never reached {target:.2f} (best {max(r['fcn_miou_ratio'] for r in records):.3f})")
    print(f"[{model}] whole command {total:.0f} s", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("translation_out"))
    parser.add_argument("--only", choices=tuple(COLUMNS), default=None)
    parser.add_argument("--every", type=int, default=500, help="optimizer steps between evaluations")
    parser.add_argument("--target", type=float, default=0.7, help="FCN-score mIoU ratio to reach (pix2pix)")
    parser.add_argument("--pix2pix", nargs="*", default=[], metavar="OVERRIDE", help="overrides of the pix2pix run")
    parser.add_argument("--cyclegan", nargs="*", default=[], metavar="OVERRIDE", help="overrides of the CycleGAN run")
    args, shared = parser.parse_known_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for model in (args.only,) if args.only else tuple(COLUMNS):
        overrides = [*shared, *getattr(args, model)]
        floors = warm_scorers(model, overrides)
        run = out / model
        records, seconds, total = train(model, run, overrides, args.every)
        results[model] = {**report(model, records, seconds, total, args.target), "real_vs_real": floors}
        for figure in sorted((run / "images").glob("triptychs*.png")):
            shutil.copy(figure, out / f"{model}_{figure.name}")
    (out / "scores.json").write_text(json.dumps(results, indent=2))
    print("scores and figures in", out)


if __name__ == "__main__":
    main()
