"""Image classifiers: a small course CNN and torchvision backbones with a fresh head.

Every builder returns a `Classifier(backbone, head)`: the backbone maps images to one
feature vector per image, the head is a new `nn.Linear` for the task's classes. Keeping
the two apart is what makes fine-tuning simple: `head_parameters(model)` gives the
parameters to train when the backbone is frozen, or to put in their own lr group.

Builders have the signature `build(cfg, *, num_classes, in_channels) -> nn.Module`, with
cfg fields `name`, `family`, `weights` (a local state-dict file or None), `freeze_backbone`,
`dropout` and `width` (the small CNN only). Nothing here downloads: torchvision models are
built with `weights=None` and pretrained tensors come from a file the user supplies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.weights import load_matching, read_state_dict
from cvtrain.registry import MODELS


class Classifier(nn.Module):
    """A backbone, dropout and a linear head; a frozen backbone stays in eval mode.

    Overriding `train()` is what keeps a frozen backbone's BatchNorm running statistics
    (and any dropout inside it) fixed: without it, `model.train()` in the training loop
    would silently keep updating statistics of layers the user asked to freeze.
    """

    def __init__(self, backbone: nn.Module, features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, num_classes)
        self.backbone_frozen = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.flatten(self.backbone(images), 1)
        return self.head(self.dropout(features))

    def freeze(self) -> Classifier:
        """Stop gradients to the backbone and keep it in eval mode from now on."""
        self.backbone_frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        return self

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the new classification head (trained even with a frozen backbone)."""
    return list(unwrap(model).head.parameters())


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of everything but the head, e.g. for a lower learning rate."""
    return list(unwrap(model).backbone.parameters())


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside torch.compile, DDP or EMA (AveragedModel) wrappers."""
    for attr in ("_orig_mod", "module"):
        model = getattr(model, attr, model)
    return model


# --- the small course CNN ------------------------------------------------------------


def _block(cin: int, cout: int) -> nn.Sequential:
    """Conv3x3 - BN - ReLU - 2x2 max-pool. The full-resolution conv sees the thin edges
    that tell a hexagon from a circle (a stride-2 conv learns them far more slowly), and
    ceil-mode pooling never shrinks a 1x1 map to nothing (8x8 digits)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
    )


class SmallCNN(nn.Sequential):
    """Four conv blocks (w, 2w, 4w, 4w) and global average pooling: fast on a CPU.

    Adaptive pooling makes the output one vector per image whatever the input size, so
    the same network takes 8x8 digits, 28x28 MNIST, 32x32 CIFAR and 64x64 shapes.
    """

    def __init__(self, in_channels: int, width: int):
        widths = [width, 2 * width, 4 * width, 4 * width]
        blocks = [_block(cin, cout) for cin, cout in zip([in_channels, *widths], widths)]
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.features = widths[-1]


@MODELS.register("cnn", family="classifier")
def cnn(cfg: Any, *, num_classes: int, in_channels: int) -> nn.Module:
    """The course's small CNN; `model.width` sets its base channel count."""
    width = int(_opt(cfg, "width", 16))
    if width < 1:
        raise UserError(f"model.width: must be a positive channel count, got {width}; try model.width=16.")
    backbone = SmallCNN(in_channels, width)
    model = Classifier(backbone, backbone.features, num_classes, _dropout(cfg))
    path = _opt(cfg, "weights", None)
    if path:
        state = read_state_dict(path)
        load_matching(model, state, "cnn", path, skip=("head.",))
    return _finish(model, cfg)


# --- torchvision backbones -----------------------------------------------------------

# name -> (path of the first conv, names of the old head inside the torchvision model)
_TORCHVISION = {
    "resnet18": ("conv1", ("fc.",)),
    "resnet50": ("conv1", ("fc.",)),
    "mobilenet_v3_small": ("features.0.0", ("classifier.3.",)),
    "mobilenet_v3_large": ("features.0.0", ("classifier.3.",)),
}


def _torchvision_classifier(name: str, cfg: Any, num_classes: int, in_channels: int) -> nn.Module:
    """Build `name` untrained, load the user's weights file, then swap conv1 and head.

    Weights go in before the first conv is adapted, so grayscale input can reuse the
    pretrained RGB filters (summed over colour), and before the head is removed, so the
    file's keys line up with torchvision's own names.
    """
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    first_conv, old_head = _TORCHVISION[name]
    path = _opt(cfg, "weights", None)
    if path:
        load_matching(net, read_state_dict(path), name, path, skip=old_head)
    if in_channels != 3:
        net.set_submodule(first_conv, _adapt_conv(net.get_submodule(first_conv), in_channels))
    features = _strip_head(net)
    return _finish(Classifier(net, features, num_classes, _dropout(cfg)), cfg)


def _strip_head(net: nn.Module) -> int:
    """Replace the ImageNet head with Identity; return the feature size it took in.

    MobileNetV3 keeps its pretrained Linear+Hardswish pre-head layer as backbone; its
    own dropout goes away because the Classifier applies `model.dropout` itself.
    """
    if hasattr(net, "fc"):
        features = net.fc.in_features
        net.fc = nn.Identity()
        return features
    features = net.classifier[3].in_features
    net.classifier = net.classifier[:2]
    return features


def _adapt_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same conv for `in_channels` inputs, its filters derived from the RGB ones.

    For one channel the RGB filters are summed, so a gray image (R=G=B) gives the same
    response as before; for other counts the filters are tiled and rescaled (as timm does).
    """
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride,
        conv.padding, conv.dilation, conv.groups, conv.bias is not None,
    )
    with torch.no_grad():
        old = conv.weight
        if in_channels == 1:
            new.weight.copy_(old.sum(dim=1, keepdim=True))
        else:
            repeats = -(-in_channels // old.shape[1])
            tiled = old.repeat(1, repeats, 1, 1)[:, :in_channels]
            new.weight.copy_(tiled * old.shape[1] / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _register_torchvision(name: str) -> None:
    """Register a builder for torchvision architecture `name`."""

    def build(cfg: Any, *, num_classes: int, in_channels: int) -> nn.Module:
        return _torchvision_classifier(name, cfg, num_classes, in_channels)

    build.__name__ = name
    build.__doc__ = f"torchvision {name}, untrained or from model.weights, with a new head."
    MODELS.register(name, family="classifier")(build)


for _name in _TORCHVISION:
    _register_torchvision(_name)


# --- shared helpers ------------------------------------------------------------------


def _finish(model: Classifier, cfg: Any) -> Classifier:
    """Apply `freeze_backbone`, the last step for every architecture."""
    if _opt(cfg, "freeze_backbone", False):
        model.freeze()
    return model


def _dropout(cfg: Any) -> float:
    p = float(_opt(cfg, "dropout", 0.0) or 0.0)
    if not 0.0 <= p < 1.0:
        raise UserError(f"model.dropout: must be in [0, 1), got {p}; try model.dropout=0.2.")
    return p


def _opt(cfg: Any, key: str, default: Any) -> Any:
    """cfg[key] when cfg has it (DictConfig or dict), else `default`."""
    getter = getattr(cfg, "get", None)
    return getter(key, default) if getter else getattr(cfg, key, default)


def as_encoder(model: Classifier, grid: int = 1) -> tuple[Classifier, int]:
    """The classifier without its head, and the size of the feature vector it returns:
    the image encoder of a captioner or a VQA model (a frozen backbone stays frozen).

    `grid` > 1 keeps a grid x grid map of features instead of one global average, so
    the vector still says where things are (left of, above), which captions need.
    """
    features = model.head.in_features
    model.head = nn.Identity()
    if grid > 1:
        pools = [m for m in model.backbone.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if not pools:
            raise UserError("this encoder has no global pooling layer to keep a feature grid; use grid=1.")
        pools[-1].output_size = grid
        features *= grid * grid
    return model, features
