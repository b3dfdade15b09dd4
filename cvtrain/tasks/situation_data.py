"""Situations as the task reads them: verb ids, and noun ids per annotator frame and role.

The verbs and their roles come from the data set (imsitu_space.json, or ShapesWorld's
table); the nouns are those of the training frames, most frequent first, with the empty
noun "" always among them. A noun of another split that training never saw becomes -1:
no loss, and (as in the official evaluation, where it becomes the unknown id) no
prediction can match it. Each image row holds its verb and, for each of its frames,
the noun id of each of the verb's roles in the verb's role order (-1 past its roles).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils.data import Dataset

from cvtrain.data.memory import InMemoryDataset
from cvtrain.data.situations import SituationImages
from cvtrain.errors import UserError
from cvtrain.registry import DATASETS
from cvtrain.tasks.vqa_data import ImageFilesWith

FRAMES = 3  # imSitu's annotators per image; fewer are repeated, more are cut


class SituationSplits:
    """The splits of cfg.dataset for the situation task and their verb, role and noun tables."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.tables: dict[str, Any] | None = None
        self._data: dict[str, SituationImages] = {}

    def images(self, split: str) -> SituationImages:
        if split not in self._data:
            builder = DATASETS.get(self.cfg.dataset.name, families=("situation",))
            self._data[split] = builder(self.cfg.dataset, split)
        return self._data[split]

    def _tables(self) -> dict[str, Any]:
        if self.tables is None:
            train = self.images("train")
            verbs = sorted(train.verb_roles)
            roles = sorted({r for rs in train.verb_roles.values() for r in rs})
            counts = Counter(n for s in train.situations for f in s.frames for n in f.values())
            counts[""] += 0
            nouns = [n for n, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
            self.tables = {"verbs": verbs, "roles": roles, "nouns": nouns,
                           "verb_roles": {v: list(train.verb_roles[v]) for v in verbs}}
        return self.tables

    @property
    def verbs(self) -> list[str]:
        return self._tables()["verbs"]

    @property
    def roles(self) -> list[str]:
        return self._tables()["roles"]

    @property
    def nouns(self) -> list[str]:
        return self._tables()["nouns"]

    def verb_roles(self, verb: str) -> list[str]:
        return self._tables()["verb_roles"][verb]

    def role_table(self) -> torch.Tensor:
        """(V, R) role ids of each verb in its order, -1 past its roles."""
        most = max(len(rs) for rs in self._tables()["verb_roles"].values())
        table = torch.full((len(self.verbs), most), -1, dtype=torch.long)
        index = {r: i for i, r in enumerate(self.roles)}
        for v, verb in enumerate(self.verbs):
            ids = [index[r] for r in self.verb_roles(verb)]
            table[v, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return table

    def encode(self, data: SituationImages) -> dict[str, torch.Tensor]:
        """verb (N,) and nouns (N, FRAMES, R) ids."""
        verb_index = {v: i for i, v in enumerate(self.verbs)}
        noun_index = {n: i for i, n in enumerate(self.nouns)}
        most = self.role_table().shape[1]
        verbs = torch.empty(len(data), dtype=torch.long)
        nouns = torch.full((len(data), FRAMES, most), -1, dtype=torch.long)
        for i, (image, situation) in enumerate(zip(data.image_ids, data.situations)):
            if situation.verb not in verb_index:
                raise UserError(f"image '{image}' has verb '{situation.verb}', which the model's verbs (those of the "
                                "training data set) do not include.")
            verbs[i] = verb_index[situation.verb]
            roles = self.verb_roles(situation.verb)
            for f in range(FRAMES):
                frame = situation.frames[f % len(situation.frames)]
                nouns[i, f, : len(roles)] = torch.tensor([noun_index.get(frame[r], -1) for r in roles])
        return {"verb": verbs, "nouns": nouns}

    def dataset(self, split: str) -> Dataset:
        data = self.images(split)
        fields = {**self.encode(data), "index": torch.arange(len(data))}
        if data.images is not None:
            return InMemoryDataset({"image": data.images, **fields})
        return ImageFilesWith(data.paths, fields, self.cfg.dataset.image_size)

    def state_dict(self) -> dict[str, Any]:
        return {"tables": self._tables()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            tables = state["tables"]
            self.tables = {"verbs": list(tables["verbs"]), "roles": list(tables["roles"]),
                           "nouns": list(tables["nouns"]),
                           "verb_roles": {str(v): list(rs) for v, rs in tables["verb_roles"].items()}}
