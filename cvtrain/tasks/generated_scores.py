"""What scores generated images: the ShapesWorld feature network (FID, KID) and its
classifier head (class_acc), as the gan task uses them, for any image generator."""

from __future__ import annotations

import torch


def feature_extractor(image_size: int, device):
    """The ShapesWorld extractor for images of `image_size`. Built in inference mode's
    absence and on a forked random stream: its first use on a machine trains it (then it is
    cached), which must neither fail under evaluation's inference mode nor move the
    training's random numbers (a resumed run builds it again)."""
    from cvtrain.metrics.generative.features import shapesworld_features

    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        return shapesworld_features(image_size=image_size, device=str(device))


def classifier_indices(extractor, class_names: list[str]) -> torch.Tensor | None:
    """Each class's index among the classifier's classes, when it knows them all (class_acc
    is then reported); None for another data set's classes."""
    known = list(extractor.class_names)
    if not class_names or not set(class_names) <= set(known):
        return None
    return torch.tensor([known.index(name) for name in class_names])


def gathered_features(parts: list) -> "np.ndarray":
    """Per-batch feature arrays of this rank -> one array of every rank's (a collective:
    every rank calls it)."""
    import numpy as np

    from cvtrain.engine.distributed import all_gather_objects

    return np.concatenate([f for part in all_gather_objects(parts) for f in part])


class FrechetScore:
    """FID of generated against real uint8 images over a split, in the ShapesWorld feature
    space: features per batch on each rank, gathered from every rank by `compute` (a
    collective: every rank calls it)."""

    def __init__(self, extractor):
        self.extractor, self.real, self.fake = extractor, [], []

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.real.append(self.extractor.extract(real.float() / 255.0))
        self.fake.append(self.extractor.extract(fake.float() / 255.0))

    def compute(self) -> float:
        from cvtrain.metrics.generative.frechet import frechet_distance, statistics

        return float(frechet_distance(*statistics(gathered_features(self.real)),
                                      *statistics(gathered_features(self.fake))))
