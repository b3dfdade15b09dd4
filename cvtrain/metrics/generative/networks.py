"""The torch modules behind the feature extractors (imported only when one is built)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cvtrain.models.classifiers import SmallCNN


class FirstOutput(nn.Module):
    """pytorch-fid's InceptionV3 returns a list of block outputs; the extractor wants one tensor."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


class Prepared(nn.Module):
    """backbone(2 x - 1) of x resized (antialiased) to size x size: training and scoring
    go through the same resize, so any image size lands in the trained distribution."""

    def __init__(self, backbone: nn.Module, size: int):
        super().__init__()
        self.backbone, self.size = backbone, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.backbone(2 * x - 1)


class ShapesWorldNet(nn.Module):
    """SmallCNN + a linear head over the ShapesWorld shapes; `features` is the network
    without the head, whose pooled output is the feature vector."""

    def __init__(self, width: int, image_size: int, num_classes: int):
        super().__init__()
        backbone = SmallCNN(3, width)
        self.features = Prepared(backbone, image_size)
        self.head = nn.Linear(backbone.features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
