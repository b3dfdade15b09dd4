"""`cvtrain --help`: the config groups and their options, read from conf/ (no Hydra, no torch)."""

from __future__ import annotations

from cvtrain.config.groups import GROUPS, describe, options

USAGE = """\
usage: cvtrain [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--debug]

Train, evaluate or predict with one composed config. Examples:
  cvtrain task=classification                       train with the task's defaults
  cvtrain task=classification model=resnet18 optimizer.lr=3e-4 trainer.epochs=20
  cvtrain task=classification mode=eval ckpt=outputs/classification/cnn/RUN/checkpoints/best.pt
  cvtrain task=classification mode=predict ckpt=PATH input='photos/*.jpg'
  cvtrain task=classification resume=true           continue the latest run
  cvtrain trainer.devices=2                         DistributedDataParallel, 2 processes
  cvtrain -m optimizer.lr=1e-3,1e-4                 a sweep (hydra/launcher=slurm on a cluster)
"""

FOOTER = """\
Other keys: mode=train|eval|predict, seed=N, ckpt=PATH, input=GLOB, resume=true|RUN_FOLDER,
paths.output_dir=DIR. Every key of a group: cvtrain/config/schema.py, or `cvtrain --cfg job`.
--debug shows tracebacks; --hydra-help shows Hydra's own flags."""


def render_help() -> str:
    """The help text: usage, then each group with its options and their descriptions."""
    lines = [USAGE, "Config groups (GROUP=OPTION):"]
    for group in GROUPS:
        lines.append(f"  {group}:")
        for option in options(group):
            about = describe(group, option)
            lines.append(f"    {option:<22}{about}" if about else f"    {option}")
    lines.append("  hydra/launcher: basic, slurm (cvtrain's settings), submitit_slurm, submitit_local")
    lines.append("")
    lines.append(FOOTER)
    return "\n".join(lines)
