"""Per-class class_acc of a class-conditional diffusion checkpoint: which classes the
ShapesWorld classifier misreads, and as what.

Draws --per-class samples of every class from the checkpoint's EMA network (the same
`Denoiser.generate` that evaluation and predict use), classifies them with the ShapesWorld
feature network, and prints the share each class gets right and its row of the confusion
matrix; then the same for the real single-object val images, the classifier's own
ceiling. Saves the samples as a grid (one class per --per-class images, in class order).

    python scripts/diffusion_class_report.py RUN/checkpoints/last.pt [--w 3] [--steps 50] [--eta 1] [--per-class 40]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def report(name: str, predicted: np.ndarray, asked: np.ndarray, classes: list[str]) -> None:
    per_class = {c: float((predicted[asked == i] == i).mean()) for i, c in enumerate(classes) if (asked == i).any()}
    print(f"{name}: class_acc {float((predicted == asked).mean()):.3f}")
    for i, c in enumerate(classes):
        if c in per_class:
            row = np.bincount(predicted[asked == i], minlength=len(classes)).tolist()
            print(f"  {c:>9} {per_class[c]:.2f}  read as {dict(zip(classes, row))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--w", type=float, default=3.0, help="guidance scale")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 deterministic, 1 stochastic)")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--grid", type=Path, default=Path("class_report.png"))
    args = parser.parse_args()

    import torchvision.utils

    from omegaconf import OmegaConf

    from cvtrain.data.shapes import load
    from cvtrain.tasks.diffusion_sampling import Denoiser, to_uint8
    from cvtrain.tasks.generated_scores import classifier_indices, feature_extractor

    state = torch.load(args.ckpt, weights_only=True)
    denoiser, info = Denoiser.from_checkpoint(state, str(args.ckpt), "cpu")
    classes = info["class_names"]
    extractor = feature_extractor(info["size"], "cpu")
    indices = classifier_indices(extractor, classes)
    if not classes or indices is None:
        raise SystemExit(f"{args.ckpt}: not a class-conditional ShapesWorld model (classes {classes})")

    ours = {int(k): i for i, k in enumerate(indices)}  # classifier index -> the checkpoint's class index

    def classify(images: torch.Tensor) -> np.ndarray:
        """The checkpoint's class index the classifier assigns to each uint8 image."""
        known = extractor.classify(extractor.extract(images.float() / 255.0))
        return np.array([ours.get(int(k), -1) for k in known])

    asked = torch.arange(len(classes)).repeat_interleave(args.per_class)
    generator = torch.Generator().manual_seed(args.seed)
    samples, _ = denoiser.generate(len(asked), info["size"], info["channels"], "cpu", labels=asked, w=args.w,
                                   steps=args.steps, eta=args.eta, generator=generator)
    samples = to_uint8(samples)
    report(f"samples (w={args.w:g}, {args.steps} DDIM steps, eta={args.eta:g})", classify(samples), asked.numpy(), classes)
    torchvision.utils.save_image(samples.float() / 255, args.grid, nrow=min(args.per_class, 20))
    print(f"grid: {args.grid}")

    data = load(OmegaConf.create(state["config"]["dataset"]), "val")  # the split the run evaluated on
    real = torch.from_numpy(data.images).permute(0, 3, 1, 2)
    report("real val images", classify(real), np.asarray(data.labels), classes)


if __name__ == "__main__":
    main()
