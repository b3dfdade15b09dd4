"""Colorization, L2 against GAN, on the same val images: is the GAN's colouring more colourful?

Trains `cvtrain task=colorization loss=l2` and `loss=cgan` with the same seed, data and
steps, evaluates both final generators on the same val images (mode=eval's scores:
PSNR, SSIM, colourfulness of outputs and of the real images), and writes one figure,
input | L2 | cGAN | target per row, of the first val images.

    python scripts/colorization_l2_vs_gan.py --out colorization_out [OVERRIDE ...]

Overrides go to both runs (e.g. trainer.epochs=2 model.width=16). Wall times are
printed; say what else ran on the machine when quoting them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

LOSSES = ("l2", "cgan")


def train(loss: str, out: Path, overrides: list[str]) -> tuple[Path, float]:
    run = out / loss
    command = [sys.executable, "-m", "cvtrain", "task=colorization", f"loss={loss}", *overrides,
               f"hydra.run.dir={run}", "trainer.progress=plain"]
    print("$", " ".join(command[2:]), flush=True)
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {loss} run failed:\n{done.stderr[-3000:]}")
    return run / "checkpoints" / "last.pt", time.time() - start


def evaluate(ckpt: Path, out: Path, overrides: list[str]) -> dict:
    folder = out / f"eval-{ckpt.parent.parent.name}"
    command = [sys.executable, "-m", "cvtrain", "mode=eval", "split=val", f"ckpt={ckpt}", *overrides,
               f"hydra.run.dir={folder}", "trainer.progress=none"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"evaluating {ckpt} failed:\n{done.stderr[-3000:]}")
    return json.loads((folder / "eval.json").read_text())


def load_task(ckpt: Path):
    """The colorization task of a checkpoint, its generator loaded, in eval mode."""
    import torch

    from cvtrain.config.schema import typed_config
    from cvtrain.registry import TASKS

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = typed_config(state["config"])
    task = TASKS.get("colorization")(cfg)
    task.load_state_dict(state.get("task", {}))
    models = task.build_models()
    models["generator"].load_state_dict(state["models"]["generator"])
    task.models = task.active = {name: m.eval() for name, m in models.items()}
    return task


def figure(ckpts: dict[str, Path], path: Path, rows: int = 8) -> Path:
    import torch

    from cvtrain.tasks.colorization import save_triptychs

    tasks = {loss: load_task(ckpt) for loss, ckpt in ckpts.items()}
    first = next(iter(tasks.values()))
    images = first.build_dataset("val").batch(torch.arange(rows))["image"]
    with torch.inference_mode():
        outputs = {loss: task.colorize(images) for loss, task in tasks.items()}
    gray = outputs["l2"][0]
    lines = list(zip(gray, outputs["l2"][1], outputs["cgan"][1], images))
    return save_triptychs(lines, path, titles=("input (L)", "L2", "cGAN", "target"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="colorization_out", help="folder for the runs and the figure")
    args, overrides = parser.parse_known_args()
    out = Path(args.out).resolve()
    ckpts, scores = {}, {}
    for loss in LOSSES:
        ckpts[loss], seconds = train(loss, out, overrides)
        scores[loss] = evaluate(ckpts[loss], out, [])
        print(f"loss={loss:5s} PSNR {scores[loss]['psnr']:.2f} dB  SSIM {scores[loss]['ssim']:.4f}  "
              f"colourfulness {scores[loss]['colourfulness']:.2f} (real images {scores[loss]['colourfulness_real']:.2f})"
              f"  training command {seconds:.0f} s", flush=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    print("figure:", figure(ckpts, out / "l2_vs_gan.png"))
    ratio = scores["cgan"]["colourfulness"] / max(scores["l2"]["colourfulness"], 1e-9)
    print(f"cGAN / L2 colourfulness: {ratio:.2f}")


if __name__ == "__main__":
    main()
