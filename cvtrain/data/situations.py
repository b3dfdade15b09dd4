"""Images with imSitu situations: ShapesWorld's, or the imSitu json layout.

A builder (DATASETS family "situation") returns `SituationImages`: per image its verb
and annotator frames (role -> noun, "" for an empty role), exactly what the official
scorer reads, the roles of every verb, and the images in memory (ShapesWorld) or as
files (imSitu).

imSitu layout (github.com/my89/imSitu): train.json / dev.json / test.json map an image
file name to {"verb", "frames": [three {role: noun id}]}; imsitu_space.json lists the
verbs ({verb: {"order": [roles], ...}}) and nouns ({noun id: {"gloss", "def"}}); the
images are in one folder (resized_256/).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cvtrain.data.image_files import first_missing, verify_images, wants_verify
from cvtrain.errors import UserError
from cvtrain.metrics.situation import Situation, parse_situations
from cvtrain.registry import DATASETS


@dataclass
class SituationImages:
    situations: list[Situation]
    image_ids: list[str]
    verb_roles: dict[str, tuple[str, ...]]  # every verb's roles, in the order a frame lists them
    images: torch.Tensor | None = None  # uint8 (N, 3, H, W), when held in memory
    paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.situations)

    def ground_truth(self) -> dict[str, Situation]:
        return dict(zip(self.image_ids, self.situations))


@DATASETS.register("shapes", family="situation")
def shapes_situations(cfg, split: str) -> SituationImages:
    """ShapesWorld's activities between shapes (hovering, lifting, pushing, pulling, resting)."""
    from cvtrain.data.shapes import load
    from cvtrain.data.shapesworld.situations import VERB_ROLES

    data = load(cfg, split)
    situations = [Situation(s["verb"], [dict(f) for f in s["frames"]]) for s in data.situations]
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
    ids = [f"{split}_{i:06d}.png" for i in range(len(data))]
    return SituationImages(situations, ids, dict(VERB_ROLES), images=images)


def _fill(template: str, cfg, split: str) -> Path:
    return Path(str(template).format(root=cfg.root or "", split=cfg.splits.get(split, split))).expanduser()


@DATASETS.register("imsitu", family="situation")
def imsitu_json(cfg, split: str) -> SituationImages:
    """The imSitu layout: dataset.annotations per split ("{root}" and "{split}" filled in,
    split through dataset.splits: val is dev.json), dataset.space and dataset.image_dir.
    Every verb, role and noun must be one imsitu_space.json knows."""
    from cvtrain.metrics.jsonfiles import read_json

    if split not in cfg.splits:
        raise UserError(f"unknown split '{split}'; dataset.splits maps {', '.join(cfg.splits)} to imSitu files.")
    path, space_path = _fill(cfg.annotations, cfg, split), _fill(cfg.space, cfg, split)
    space = read_json(space_path, "dataset.space", kind="imsitu_space.json")
    verb_roles, nouns = _read_space(space, space_path)
    where = f"dataset.annotations '{path}'"
    situations = parse_situations(read_json(path, "dataset.annotations", kind="imSitu json (train.json, dev.json)"),
                                  where)
    for image, situation in situations.items():
        check_situation(image, situation, verb_roles, nouns, where)
    ids = list(situations)
    folder = _fill(cfg.image_dir, cfg, split)
    paths = [folder / image for image in ids]
    missing = first_missing(paths)
    if missing:
        raise UserError(f"dataset.image_dir: image '{missing}' of {path.name} is missing; point dataset.image_dir "
                        "at imSitu's image folder (resized_256).")
    if wants_verify(cfg):
        verify_images(paths)
    return SituationImages([situations[i] for i in ids], ids, verb_roles, paths=paths)


def check_situation(image: str, situation: Situation, verb_roles: dict[str, tuple[str, ...]], nouns: set[str],
                    where: str) -> None:
    """One clear error naming the image for an unknown verb, a role the verb does not
    have (or lacks) and a noun id imsitu_space.json does not list."""
    roles = verb_roles.get(situation.verb)
    if roles is None:
        raise UserError(f"{where}: image '{image}' has verb '{situation.verb}', which imsitu_space.json does not list.")
    for frame in situation.frames:
        if set(frame) != set(roles):
            raise UserError(f"{where}: image '{image}' (verb '{situation.verb}') has roles {sorted(frame)}; the verb's "
                            f"roles are {sorted(roles)}.")
        for role, noun in frame.items():
            if noun and noun not in nouns:
                raise UserError(f"{where}: image '{image}', role '{role}': unknown noun id '{noun}' (not in "
                                "imsitu_space.json's nouns; \"\" is the empty role).")


def _read_space(space: Any, path: Path) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    try:
        verbs = {str(v): tuple(str(r) for r in (d.get("order") or sorted(d["roles"]))) for v, d in space["verbs"].items()}
        nouns = {str(n) for n in space["nouns"]}
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"dataset.space: '{path}' needs verbs {{verb: {{order: [roles]}}}} and nouns {{id: ...}}, "
                        "as imsitu_space.json.") from None
    return verbs, nouns
