"""Segmentation models: the course U-Net and encoder-decoder, torchvision FCN and DeepLabV3.

Every builder has the signature `build(cfg, *, num_classes, in_channels) -> nn.Module`
and returns a module whose output holds logits (B, num_classes, H, W) at the input's
resolution. The course models return that tensor; the torchvision ones return
torchvision's dict, {"out": logits} plus "aux" (the auxiliary head on an earlier stage)
when `model.aux_loss` is on. `split_outputs` turns either into (logits, aux or None),
so a task never needs to know which kind it trains.

Nothing here downloads: torchvision models are built with weights=None;
`model.backbone_weights=PATH` loads an ImageNet classifier's state dict into the
backbone and `model.weights=PATH` a whole segmentation model, both from local files.
torchvision is imported only inside its builders, so start-up stays light.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.classifiers import _adapt_conv
from cvtrain.models.weights import load_matching, read_state_dict
from cvtrain.registry import MODELS


def split_outputs(outputs: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(main logits, auxiliary logits or None) of any segmentation model's output."""
    if isinstance(outputs, dict):
        return outputs["out"], outputs.get("aux")
    return outputs, None


# --- the course models ---------------------------------------------------------------


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """(Conv3x3 - BN - ReLU) x 2: U-Net's unit. Two 3x3 convs see 5x5 at one resolution,
    enough to place an edge exactly before the next pooling halves the map."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class _Padded(nn.Module):
    """Pads the input to a multiple of 2**depth and crops the logits back.

    Each of the `depth` poolings halves the map; without padding a side that is not a
    multiple of 2**depth would come back a pixel short after upsampling.
    """

    depth: int

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        return self.segment(images)[..., :height, :width]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class UNet(_Padded):
    """U-Net (Ronneberger et al., 2015): an encoder of `depth` poolings with doubling
    channels, a decoder of transposed convolutions, and skip connections that hand each
    decoder stage the encoder's features of the same resolution, so the coarse "what" of
    the bottleneck is combined with the fine "where" of the early layers."""

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int, dropout: float = 0.0):
        super().__init__()
        self.depth = depth
        widths = [width * 2**i for i in range(depth + 1)]
        self.stem = double_conv(in_channels, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), double_conv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.fuses = nn.ModuleList(double_conv(2 * widths[i], widths[i]) for i in range(depth))
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        for i in reversed(range(self.depth)):
            x = self.fuses[i](torch.cat([skips[i], self.ups[i](x)], dim=1))
        return self.head(self.dropout(x))


class EncoderDecoder(_Padded):
    """An encoder-decoder without skips (SegNet/FCN-style): `depth` conv-pool stages down,
    `depth` upsampling stages back. Everything the decoder knows passes the bottleneck, so
    boundaries come out blurrier than U-Net's: the comparison the course makes."""

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int, dropout: float = 0.0):
        super().__init__()
        self.depth = depth
        widths = [width * 2**i for i in range(depth + 1)]
        down = [double_conv(in_channels, widths[0])]
        for i in range(depth):
            down += [nn.MaxPool2d(2), double_conv(widths[i], widths[i + 1])]
        up = []
        for i in reversed(range(depth)):
            up += [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2), double_conv(widths[i], widths[i])]
        self.encoder = nn.Sequential(*down)
        self.decoder = nn.Sequential(*up)
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.decoder(self.encoder(images))))


def _course_model(cls, cfg: Any, num_classes: int, in_channels: int) -> nn.Module:
    width, depth, dropout = int(cfg.width), int(cfg.depth), float(cfg.dropout)
    if width < 1:
        raise UserError(f"model.width: must be a positive channel count, got {width}; try model.width=16.")
    if not 1 <= depth <= 6:
        raise UserError(f"model.depth: must be 1..6 down-sampling stages, got {depth}; try model.depth=3.")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.dropout: must be in [0, 1), got {dropout}; try model.dropout=0.1.")
    for key in ("backbone_weights", "freeze_backbone", "aux_loss"):
        if cfg.get(key):
            raise UserError(f"model.{key} applies to the torchvision models (fcn, deeplabv3), not "
                            f"model={cfg.name}; drop it or pick model=fcn|deeplabv3.")
    model = cls(in_channels, num_classes, width, depth, dropout)
    if cfg.get("weights"):
        load_matching(model, read_state_dict(cfg.weights), cfg.name, cfg.weights)
    return model


@MODELS.register("unet", family="segmenter")
def unet(cfg: Any, *, num_classes: int, in_channels: int) -> nn.Module:
    """The course U-Net: `model.width` base channels, `model.depth` down/up stages, skips."""
    return _course_model(UNet, cfg, num_classes, in_channels)


@MODELS.register("encoder_decoder", family="segmenter")
def encoder_decoder(cfg: Any, *, num_classes: int, in_channels: int) -> nn.Module:
    """The course encoder-decoder without skips: `model.width`, `model.depth`."""
    return _course_model(EncoderDecoder, cfg, num_classes, in_channels)


# --- torchvision FCN and DeepLabV3 ---------------------------------------------------

# (model, backbone) -> torchvision builder; FCN has no MobileNet variant in torchvision.
_TORCHVISION = {
    ("fcn", "resnet50"): "fcn_resnet50",
    ("fcn", "resnet101"): "fcn_resnet101",
    ("deeplabv3", "resnet50"): "deeplabv3_resnet50",
    ("deeplabv3", "resnet101"): "deeplabv3_resnet101",
    ("deeplabv3", "mobilenet_v3_large"): "deeplabv3_mobilenet_v3_large",
}


class TorchvisionSegmenter(nn.Module):
    """A torchvision FCN/DeepLabV3 (`net`), optionally with its backbone frozen.

    A frozen backbone gets no gradients and stays in eval mode, so its BatchNorm
    statistics stay those of the pretrained weights (as Classifier.freeze does). Every
    torchvision model is wrapped, frozen or not, so checkpoints have the same keys.
    """

    def __init__(self, net: nn.Module, freeze_backbone: bool = False):
        super().__init__()
        self.net = net
        self.backbone_frozen = freeze_backbone
        if freeze_backbone:
            net.backbone.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(images)

    def train(self, mode: bool = True) -> TorchvisionSegmenter:
        super().train(mode)
        if self.backbone_frozen:
            self.net.backbone.eval()
        return self


def _torchvision_segmenter(name: str, cfg: Any, num_classes: int, in_channels: int) -> nn.Module:
    """Build untrained, load the backbone's ImageNet weights, then the whole model's,
    then adapt the first conv (after loading, so the RGB filters can be reused)."""
    import torchvision.models.segmentation as tvs

    key = (name, str(cfg.backbone))
    if key not in _TORCHVISION:
        valid = ", ".join(b for m, b in _TORCHVISION if m == name)
        raise UserError(f"model.backbone={cfg.backbone} is not available for model={name}; valid: {valid}.")
    if float(cfg.dropout):
        raise UserError(f"model.dropout applies to the course models; model={name} keeps torchvision's own "
                        "head dropout, so drop model.dropout.")
    net = getattr(tvs, _TORCHVISION[key])(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=bool(cfg.aux_loss)
    )
    if cfg.backbone_weights:
        load_backbone_weights(net.backbone, str(cfg.backbone), cfg.backbone_weights)
    if cfg.weights:  # torchvision's own files, or a cvtrain model's (under "net.")
        state = {k.removeprefix("net."): v for k, v in read_state_dict(cfg.weights).items()}
        load_matching(net, state, _TORCHVISION[key], cfg.weights)
    if in_channels != 3:
        first = "conv1" if str(cfg.backbone).startswith("resnet") else "0.0"
        net.backbone.set_submodule(first, _adapt_conv(net.backbone.get_submodule(first), in_channels))
    return TorchvisionSegmenter(net, bool(cfg.freeze_backbone))


def load_backbone_weights(backbone: nn.Module, arch: str, path: str) -> int:
    """An ImageNet classifier's state dict (torchvision names) into a segmentation backbone.

    The backbone keeps the classifier's layer names but not its head (ResNet's fc,
    MobileNet's classifier), and MobileNet's layers sit at the top level instead of under
    `features.`, so the file's keys are mapped before the usual name-and-shape match.
    """
    key = "model.backbone_weights"
    state = read_state_dict(path, key=key)
    if arch.startswith("mobilenet"):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return load_matching(backbone, state, arch, path, skip=("fc.", "classifier."), key=key)


def _register_torchvision(name: str) -> None:
    def build(cfg: Any, *, num_classes: int, in_channels: int) -> nn.Module:
        return _torchvision_segmenter(name, cfg, num_classes, in_channels)

    build.__name__ = name
    build.__doc__ = f"torchvision {name} with the backbone of model.backbone, untrained or from local weights."
    MODELS.register(name, family="segmenter")(build)


for _name in ("fcn", "deeplabv3"):
    _register_torchvision(_name)
