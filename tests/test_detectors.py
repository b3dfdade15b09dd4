"""Detectors and instance segmenters: a training step each, eval outputs, weights files."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cvtrain.config.schema import DetectorModelConfig, InstanceSegmenterModelConfig
from cvtrain.errors import UserError
from cvtrain.registry import MODELS

FAMILIES = ("detector", "instance_segmenter")
LOSS_KEYS = {
    "faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "mask_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"},
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "ssd": {"classification", "bbox_regression"},
}
SIGMOID_HEADS = {"retinanet", "fcos"}  # they score the background column too (the task drops label 0)
TINY = {"width": 8, "fpn_channels": 16, "min_size": 64, "max_size": 64, "representation_size": 32,
        "rpn_pre_nms_top_n_train": 50, "rpn_post_nms_top_n_train": 20, "rpn_pre_nms_top_n_test": 50,
        "rpn_post_nms_top_n_test": 20, "box_batch_size_per_image": 16, "rpn_batch_size_per_image": 32,
        "score_thresh": 0.0}


def tiny_cfg(name: str, **changes):
    family = MODELS.entry(name).family
    schema = InstanceSegmenterModelConfig if family == "instance_segmenter" else DetectorModelConfig
    cfg = OmegaConf.structured(schema(name=name))
    extra = {"mask_channels": 8} if family == "instance_segmenter" else {}
    if name == "fcos":
        extra = {"fpn_channels": 32, "anchor_sizes": [4, 8, 16]}  # its head's GroupNorm has 32 groups
    for key, value in {**TINY, **extra, **changes}.items():
        cfg[key] = value
    return cfg


def _batch(masks: bool):
    """Two images of different sizes (48x64, 64x40) with two and one objects."""
    images = [torch.rand(3, 48, 64), torch.rand(3, 64, 40)]
    boxes = [torch.tensor([[4.0, 6.0, 24.0, 30.0], [30.0, 10.0, 60.0, 40.0]]), torch.tensor([[8.0, 20.0, 30.0, 50.0]])]
    targets = []
    for image, b, labels in zip(images, boxes, [torch.tensor([1, 3]), torch.tensor([2])]):
        target = {"boxes": b, "labels": labels}
        if masks:
            m = torch.zeros(len(b), *image.shape[-2:], dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(b.int().tolist()):
                m[i, y1:y2, x1:x2] = 1
            target["masks"] = m
        targets.append(target)
    return images, targets


@pytest.mark.parametrize("name", MODELS.names(FAMILIES))
def test_one_training_step_and_eval_outputs(name):
    torch.manual_seed(0)
    masks = MODELS.entry(name).family == "instance_segmenter"
    model = MODELS.get(name, FAMILIES)(tiny_cfg(name), num_classes=4)
    images, targets = _batch(masks)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS[name]
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    optimizer.step()
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert changed > len(before) // 2, f"only {changed} of {len(before)} parameter tensors changed"

    model.eval()
    with torch.no_grad():
        outputs = model(images)
    for image, out in zip(images, outputs):
        assert {"boxes", "labels", "scores"} <= set(out) and ("masks" in out) == masks
        n = len(out["scores"])
        assert out["boxes"].shape == (n, 4) and out["labels"].shape == (n,)
        assert n > 0, "score_thresh=0 must keep some boxes"
        lowest = 0 if name in SIGMOID_HEADS else 1
        assert out["labels"].min() >= lowest and out["labels"].max() <= 3, "labels are 1..K (0: sigmoid background)"
        height, width = image.shape[-2:]
        assert out["boxes"][:, 2].max() <= width + 1e-3 and out["boxes"][:, 3].max() <= height + 1e-3
        if masks:
            assert out["masks"].shape == (n, 1, height, width), "masks come back at the input's size"


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_torchvision_backbones_build_with_a_pyramid(backbone):
    model = MODELS.get("faster_rcnn")(tiny_cfg("faster_rcnn", backbone=backbone, trainable_layers=3), num_classes=3)
    features = model.backbone(torch.rand(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2"] and all(f.shape[1] == 16 for f in features.values())
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4], "strides 4, 8, 16"
    frozen = [n for n, p in model.backbone.body.named_parameters() if not p.requires_grad]
    trained = [n for n, p in model.backbone.body.named_parameters() if p.requires_grad]
    assert frozen and trained, "trainable_layers=3 freezes the early stages only"
    from torchvision.ops.misc import FrozenBatchNorm2d

    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules()), "frozen BN statistics"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules()), "trained stages keep BN"


def test_backbone_weights_from_a_local_file_are_loaded(tmp_path):
    import torchvision

    imagenet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        imagenet.conv1.weight.fill_(0.125)
        imagenet.layer3[1].conv2.weight.normal_()
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)  # a torchvision ImageNet file, head included
    model = MODELS.get("faster_rcnn")(tiny_cfg("faster_rcnn", backbone="resnet18", backbone_weights=str(path)),
                                      num_classes=3)
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(body.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)


def test_small_backbone_weights_round_trip(tmp_path):
    first = MODELS.get("retinanet")(tiny_cfg("retinanet"), num_classes=3)
    path = tmp_path / "small.pt"
    torch.save(first.backbone.body.state_dict(), path)
    torch.manual_seed(123)
    second = MODELS.get("retinanet")(tiny_cfg("retinanet", backbone_weights=str(path)), num_classes=3)
    for key, value in first.backbone.body.state_dict().items():
        assert torch.equal(second.backbone.body.state_dict()[key], value), key


def _one_line_error(cfg) -> str:
    with pytest.raises(UserError) as info:
        MODELS.get(cfg.name)(cfg, num_classes=3)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_backbone_weights_are_one_line_user_errors(tmp_path):
    missing = _one_line_error(tiny_cfg("faster_rcnn", backbone_weights=str(tmp_path / "nope.pth")))
    assert "model.backbone_weights" in missing and "no such file" in missing
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file at all")
    assert "model.backbone_weights" in _one_line_error(tiny_cfg("faster_rcnn", backbone_weights=str(corrupt)))
    import torchvision

    other = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    mismatch = _one_line_error(tiny_cfg("faster_rcnn", backbone="small", backbone_weights=str(other)))
    assert "does not fit backbone small" in mismatch


def test_whole_detector_weights_load_and_a_class_mismatch_is_an_error(tmp_path):
    model = MODELS.get("fcos")(tiny_cfg("fcos"), num_classes=3)
    path = tmp_path / "fcos.pt"
    torch.save(model.state_dict(), path)
    again = MODELS.get("fcos")(tiny_cfg("fcos", weights=str(path)), num_classes=3)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="model.weights: .* does not fit fcos"):
        MODELS.get("fcos")(tiny_cfg("fcos", weights=str(path)), num_classes=5)


def test_config_errors_name_the_key():
    assert "model.anchor_sizes" in _one_line_error(tiny_cfg("faster_rcnn", anchor_sizes=[8, 16, 32, 64, 128, 256]))
    assert "model.backbone" in _one_line_error(tiny_cfg("faster_rcnn", backbone="vgg"))
    assert "model.trainable_layers" in _one_line_error(tiny_cfg("faster_rcnn", trainable_layers=9))
    assert "model.fpn_channels" in _one_line_error(tiny_cfg("fcos", fpn_channels=48))
