"""Detectors: torchvision Faster R-CNN, RetinaNet, FCOS, SSD and Mask R-CNN with configurable backbones.

Every builder has the signature `build(cfg, *, num_classes) -> nn.Module`, where `cfg`
is a `DetectorModelConfig` (or `InstanceSegmenterModelConfig`) and `num_classes` counts
the background: K real classes give num_classes = K + 1 and labels 1..K. The detectors
are torchvision's own classes, assembled from torchvision parts (FPN, anchor
generators, RoIAlign, heads); this module only chooses their sizes, so a course run
on a CPU can use a small backbone and few proposals, and the same code trains a
ResNet-50 FPN on a GPU.

Backbones: `small` (a plain conv net written for the course, fast on a CPU), and
torchvision `resnet18`, `resnet50`, `mobilenet_v3_large`, each under a feature pyramid
with one level per entry of `anchor_sizes` (strides 4, 8, 16, 32, and a max-pooled
level 64 for a fifth). Nothing downloads: torchvision models are built with
`weights=None`; `backbone_weights` (an ImageNet classifier state dict) and `weights` (a
whole detector) are local files read with `torch.load(weights_only=True)`.

torchvision is imported here only, and this module only when a model is looked up,
so the command line starts without it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.weights import read_tensors
from cvtrain.registry import MODELS

log = logging.getLogger(__name__)

BACKBONES = ("small", "resnet18", "resnet50", "mobilenet_v3_large")
PYRAMID_STRIDES = (4, 8, 16, 32)  # the backbone stages a feature pyramid reads


# --- backbones -----------------------------------------------------------------------


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_backbone(width: int) -> nn.Sequential:
    """The course's CPU backbone: a stride-2 stem and four stages of (stride-2 conv, conv).

    Widths w, w, 2w, 4w, 4w at strides 2..32: at 128x128 inputs that is a few tens of
    MFLOPs, so Faster R-CNN trains in minutes on two cores. No residuals: five shallow
    stages are easy to train from scratch with BatchNorm.
    """
    if width < 1:
        raise UserError(f"model.width: must be a positive channel count, got {width}; try model.width=32.")
    widths = [width, width, 2 * width, 4 * width, 4 * width]
    stages = OrderedDict(stem=nn.Sequential(*_conv(3, widths[0], 2)))
    for i, (cin, cout) in enumerate(zip(widths, widths[1:]), start=1):
        stages[f"layer{i}"] = nn.Sequential(*_conv(cin, cout, 2), *_conv(cout, cout, 1))
    return nn.Sequential(stages)


def _torchvision_backbone(name: str, weights: str | None) -> nn.Sequential:
    """A torchvision classifier's feature layers as one Sequential of named children.

    The ImageNet weights go into the whole classifier first, under torchvision's own
    names, so a torchvision weights file loads as it is; the head is dropped afterwards.
    """
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if weights:
        _load_backbone_weights(net, weights, name, head=("fc.", "classifier."))
    if name.startswith("resnet"):
        keep = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        return nn.Sequential(OrderedDict((k, getattr(net, k)) for k in keep))
    return nn.Sequential(OrderedDict(net.features.named_children()))


def _load_backbone_weights(net: nn.Module, path: str, arch: str, head: tuple[str, ...] = ()) -> None:
    """Load every non-head tensor of `net` from `path`; a file that does not cover them
    all is for another architecture, which is an error rather than a silent partial load."""
    state = {_strip(k): v for k, v in read_weights(path, "backbone_weights").items()}
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(head)}
    for key, tensor in own.items():
        if key not in state or state[key].shape != tensor.shape:
            found = "missing" if key not in state else f"shape {tuple(state[key].shape)}"
            raise UserError(
                f"model.backbone_weights: '{path}' does not fit backbone {arch} ({key}: {found}, "
                f"expected {tuple(tensor.shape)}); pass an ImageNet state dict of model.backbone={arch}."
            )
    net.load_state_dict({k: state[k] for k in own}, strict=False)
    log.info("model.backbone_weights: loaded %d %s tensors from %s", len(own), arch, path)


def read_weights(path: str, key: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of a local state-dict file (`model.<key>`), names as saved; a cvtrain
    checkpoint's models.model is unwrapped too, so a run's best.pt can start another run."""
    return read_tensors(path, f"model.{key}", nested=("models", "state_dict", "model"))


def _strip(key: str) -> str:
    """A key without the wrappers a saved model may add (DDP, compile, a detector's body)."""
    for prefix in ("module.", "_orig_mod.", "backbone.body.", "body."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _stages(body: nn.Sequential) -> list[tuple[str, int, int]]:
    """(name of the last child, stride, channels) of each resolution of `body`.

    Found by one small forward pass rather than tables per architecture, so any
    Sequential backbone works and the pyramid reads exactly where each stride ends.
    """
    was_training = body.training
    body.eval()
    x, size, found = torch.zeros(1, 3, 64, 64), 64, OrderedDict()
    with torch.no_grad():
        for name, child in body.named_children():
            x = child(x)
            found[size // x.shape[-1]] = (name, size // x.shape[-1], x.shape[1])
    body.train(was_training)
    return list(found.values())


def _freeze_early_stages(body: nn.Module, stages: list[tuple[str, int, int]], trainable: int) -> None:
    """Train only the last `trainable` resolution stages (torchvision's trainable_layers):
    earlier ones get no gradients and fixed BatchNorm statistics."""
    if not 0 <= trainable <= len(stages):
        raise UserError(f"model.trainable_layers: must be in 0..{len(stages)}, got {trainable}; try 3 or 5.")
    if trainable == len(stages):
        return
    last_frozen = stages[len(stages) - trainable - 1][0]
    for name, child in body.named_children():
        child.requires_grad_(False)
        _freeze_batchnorm(child)
        if name == last_frozen:
            break


def _freeze_batchnorm(module: nn.Module) -> None:
    """Replace BatchNorm2d by FrozenBatchNorm2d with the same statistics and affine terms."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            module.add_module(name, frozen)
        else:
            _freeze_batchnorm(child)


class PyramidBackbone(nn.Module):
    """A backbone's stage outputs under a feature pyramid: {"0": stride 4, "1": stride 8, ...}.

    torchvision's BackboneWithFPN always adds a max-pooled level; here the number of
    levels follows `anchor_sizes`, so a CPU model on 128-pixel images need not pay for
    levels that hold no object.
    """

    def __init__(self, body: nn.Sequential, return_layers: dict[str, str], in_channels: list[int],
                 out_channels: int, extra_pool: bool):
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        self.body = IntermediateLayerGetter(body, return_layers=return_layers)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, LastLevelMaxPool() if extra_pool else None)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def build_backbone(cfg: Any) -> PyramidBackbone:
    """The configured backbone with one pyramid level per anchor size.

    Stages after the last pyramid level are dropped (IntermediateLayerGetter stops
    there), so the small backbone's weights are loaded after that, into what is used.
    """
    name = cfg.backbone
    if name not in BACKBONES:
        from cvtrain.errors import unknown_choice

        raise unknown_choice("model.backbone", name, BACKBONES)
    body = small_backbone(int(cfg.width)) if name == "small" else _torchvision_backbone(name, cfg.backbone_weights)
    stages = _stages(body)
    levels = len(cfg.anchor_sizes)
    pyramid = [s for s in stages if s[1] in PYRAMID_STRIDES]
    if not 1 <= levels <= len(pyramid) + 1:
        raise UserError(f"model.anchor_sizes: give 1 to {len(pyramid) + 1} sizes (one per pyramid level, "
                        f"strides {', '.join(str(s[1]) for s in pyramid)} and a pooled level), got {levels}.")
    used = pyramid[:levels]
    return_layers = {stage[0]: str(i) for i, stage in enumerate(used)}
    backbone = PyramidBackbone(body, return_layers, [s[2] for s in used], int(cfg.fpn_channels),
                               extra_pool=levels > len(pyramid))
    if name == "small" and cfg.backbone_weights:
        _load_backbone_weights(backbone.body, cfg.backbone_weights, "small")
    _freeze_early_stages(backbone.body, stages, int(cfg.trainable_layers))
    return backbone


# --- shared settings -----------------------------------------------------------------


def _anchors(cfg: Any, one_per_location: bool = False):
    """One anchor size per pyramid level, each with every aspect ratio (FCOS: one point)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = tuple((int(s),) for s in cfg.anchor_sizes)
    ratios = (1.0,) if one_per_location else tuple(float(r) for r in cfg.aspect_ratios)
    return AnchorGenerator(sizes, (ratios,) * len(sizes))


def _transform_args(cfg: Any) -> dict[str, Any]:
    """GeneralizedRCNNTransform's resize: tiny shapes are easier to find upscaled."""
    if cfg.min_size < 16 or cfg.max_size < cfg.min_size:
        raise UserError(f"model.min_size/max_size: need 16 <= min_size <= max_size, got {cfg.min_size}/{cfg.max_size}.")
    return {"min_size": int(cfg.min_size), "max_size": int(cfg.max_size)}


def _groups(channels: int) -> int:
    """GroupNorm groups for `channels`: 32 as torchvision uses, fewer for thin CPU heads."""
    groups = min(32, channels)
    while channels % groups:
        groups -= 1
    return groups


def _check_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise UserError(f"a detector needs at least one class besides the background, got num_classes={num_classes}.")


def _finish(model: nn.Module, cfg: Any, arch: str) -> nn.Module:
    """Load a whole detector's weights (`model.weights`) when given."""
    if cfg.weights:
        state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in read_weights(cfg.weights).items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0]
            raise UserError(f"model.weights: '{cfg.weights}' does not fit {arch} with these classes and sizes "
                            f"({detail[:150]}); pass weights trained with the same model config.") from None
    return model


def _rcnn_args(cfg: Any, num_classes: int) -> dict[str, Any]:
    """What Faster and Mask R-CNN share: RPN, RoI sampling, box head and predictor sizes."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    levels = [str(i) for i in range(len(cfg.anchor_sizes))]
    channels, rep = int(cfg.fpn_channels), int(cfg.representation_size)
    return dict(
        num_classes=None, **_transform_args(cfg),
        rpn_anchor_generator=_anchors(cfg),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=int(cfg.roi_sampling_ratio)),
        box_head=TwoMLPHead(channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.score_thresh, box_nms_thresh=cfg.nms_thresh,
        box_detections_per_img=cfg.detections_per_img,
    )


# --- the detectors -------------------------------------------------------------------


@MODELS.register("faster_rcnn", family="detector")
def faster_rcnn(cfg: Any, *, num_classes: int) -> nn.Module:
    """Two stages: an RPN proposes boxes, RoIAlign + a two-layer MLP classifies and refines them."""
    from torchvision.models.detection import FasterRCNN

    _check_classes(num_classes)
    return _finish(FasterRCNN(build_backbone(cfg), **_rcnn_args(cfg, num_classes)), cfg, "faster_rcnn")


@MODELS.register("mask_rcnn", family="instance_segmenter")
def mask_rcnn(cfg: Any, *, num_classes: int) -> nn.Module:
    """Faster R-CNN plus a small FCN mask head on 14x14 RoIAlign features per box."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    _check_classes(num_classes)
    levels = [str(i) for i in range(len(cfg.anchor_sizes))]
    channels = int(cfg.mask_channels)
    model = MaskRCNN(
        build_backbone(cfg), **_rcnn_args(cfg, num_classes),
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=int(cfg.roi_sampling_ratio)),
        mask_head=MaskRCNNHeads(int(cfg.fpn_channels), [channels] * int(cfg.mask_layers), 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
    )
    return _finish(model, cfg, "mask_rcnn")


@MODELS.register("retinanet", family="detector")
def retinanet(cfg: Any, *, num_classes: int) -> nn.Module:
    """One stage: dense anchors per level, focal loss for classes, L1 for boxes. The head's
    convs get GroupNorm (torchvision's RetinaNet v2): without it, a head trained from
    scratch on a new backbone barely moves its focal loss in the first few hundred steps."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.retinanet import RetinaNetHead

    _check_classes(num_classes)
    anchors = _anchors(cfg)
    channels = int(cfg.fpn_channels)
    head = RetinaNetHead(channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, _groups(channels)))
    model = RetinaNet(build_backbone(cfg), num_classes, **_transform_args(cfg), anchor_generator=anchors, head=head,
                      score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
                      detections_per_img=cfg.detections_per_img, topk_candidates=cfg.topk_candidates)
    return _finish(model, cfg, "retinanet")


@MODELS.register("fcos", family="detector")
def fcos(cfg: Any, *, num_classes: int) -> nn.Module:
    """Anchor-free: each location predicts a class, its distances to the box sides and a
    centerness. `anchor_sizes` here are the level sizes that decide which level an object
    goes to (torchvision assigns objects of 4..8x that size), best set to the strides."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.fcos import FCOSHead

    _check_classes(num_classes)
    if cfg.fpn_channels % 32:
        raise UserError(f"model.fpn_channels: FCOS's head normalizes with 32 groups, so it needs a multiple of 32, "
                        f"got {cfg.fpn_channels}; try model.fpn_channels=64.")
    head = FCOSHead(int(cfg.fpn_channels), 1, num_classes, num_convs=int(cfg.head_convs))
    model = FCOS(build_backbone(cfg), num_classes, **_transform_args(cfg), anchor_generator=_anchors(cfg, True),
                 head=head, score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
                 detections_per_img=cfg.detections_per_img, topk_candidates=cfg.topk_candidates)
    return _finish(model, cfg, "fcos")


@MODELS.register("ssd", family="detector")
def ssd(cfg: Any, *, num_classes: int) -> nn.Module:
    """Single Shot Detector on the pyramid: images resized to a fixed min_size square,
    default boxes of `anchor_sizes` per level, hard negative mining, softmax classes."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD, SSDHead

    _check_classes(num_classes)
    size = int(_transform_args(cfg)["min_size"])
    sizes = [float(s) for s in cfg.anchor_sizes]
    scales = [s / size for s in sizes] + [2 * sizes[-1] / size]
    ratios = sorted({round(max(r, 1 / r)) for r in cfg.aspect_ratios if abs(r - 1.0) > 1e-6})
    boxes = DefaultBoxGenerator([ratios] * len(sizes), scales=scales)
    head = SSDHead([int(cfg.fpn_channels)] * len(sizes), boxes.num_anchors_per_location(), num_classes)
    model = SSD(build_backbone(cfg), boxes, (size, size), num_classes, head=head, score_thresh=cfg.score_thresh,
                nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img,
                topk_candidates=cfg.topk_candidates)
    return _finish(model, cfg, "ssd")
