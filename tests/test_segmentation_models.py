"""Segmentation models and losses: shapes, training steps, local weights, ignored pixels, Dice."""

from __future__ import annotations

import math
import os

import pytest
import torch
from omegaconf import OmegaConf

from cvtrain.errors import UserError
from cvtrain.models.segmentation import split_outputs
from cvtrain.registry import LOSSES, MODELS
from cvtrain.tasks.losses import SegmentationLoss

SEGMENTERS = MODELS.names(("segmenter",))


def make_cfg(name: str, **over) -> object:
    base = dict(name=name, family="segmenter", width=4, depth=2, backbone="resnet50", backbone_weights=None,
                weights=None, freeze_backbone=False, aux_loss=False, aux_weight=0.5, dropout=0.0)
    return OmegaConf.create({**base, **over})


def build(name: str, num_classes: int = 5, in_channels: int = 3, **over) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.get(name, ("segmenter",))(make_cfg(name, **over), num_classes=num_classes, in_channels=in_channels)


def test_every_segmenter_is_registered():
    assert set(SEGMENTERS) == {"unet", "encoder_decoder", "fcn", "deeplabv3"}


@pytest.mark.parametrize("name", SEGMENTERS)
def test_forward_backward_step_at_input_resolution(name):
    model = build(name, num_classes=5).train().to(memory_format=torch.channels_last)  # as trainer.channels_last does
    images = torch.randn(2, 3, 36, 44).contiguous(memory_format=torch.channels_last)  # 36, 44: no multiple of 8
    target = torch.randint(0, 5, (2, 36, 44))
    target[:, :4] = 255
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits, aux = split_outputs(model(images))
    assert logits.shape == (2, 5, 36, 44) and aux is None
    SegmentationLoss()(logits, target).backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert changed[0] and changed[-1], "first or last layer did not change"
    assert sum(changed) >= 0.9 * len(changed)


def test_aux_head_mobilenet_backbone_and_grayscale_input():
    model = build("deeplabv3", backbone="mobilenet_v3_large", aux_loss=True, in_channels=1).eval()
    out = model(torch.randn(1, 1, 40, 40))
    assert out["out"].shape == out["aux"].shape == (1, 5, 40, 40)


def test_unknown_backbone_and_bad_course_settings_are_user_errors():
    with pytest.raises(UserError, match="model.backbone=mobilenet_v3_large is not available for model=fcn"):
        build("fcn", backbone="mobilenet_v3_large")
    with pytest.raises(UserError, match="model.depth"):
        build("unet", depth=0)
    with pytest.raises(UserError, match="model.backbone_weights applies to the torchvision models"):
        build("unet", backbone_weights="x.pth")


def test_freeze_backbone_trains_the_head_and_keeps_bn_statistics():
    model = build("deeplabv3", backbone="mobilenet_v3_large", freeze_backbone=True).train()
    backbone = model.net.backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    assert all(p.requires_grad for p in model.net.classifier.parameters())
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    stats = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 32, 32) * 3 + 1)
    assert all(torch.equal(s, bn.running_mean) for s, bn in zip(stats, bns))


# --- weights from local files ---------------------------------------------------------


def _save_classifier(name: str, path) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(123)
    state = getattr(torchvision.models, name)(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_resnet50_backbone_weights_load_into_fcn(tmp_path):
    path = tmp_path / "resnet50-0676ba61.pth"
    saved = _save_classifier("resnet50", path)
    model = build("fcn", backbone_weights=str(path))
    backbone = model.net.backbone.state_dict()
    assert torch.equal(backbone["conv1.weight"], saved["conv1.weight"])
    assert torch.equal(backbone["layer4.2.bn3.running_var"], saved["layer4.2.bn3.running_var"])
    assert "fc.weight" not in backbone
    fresh = build("fcn")
    assert not torch.equal(fresh.net.backbone.conv1.weight, saved["conv1.weight"])


def test_mobilenet_backbone_weights_load_into_deeplabv3(tmp_path):
    path = tmp_path / "mobilenet_v3_large.pth"
    saved = _save_classifier("mobilenet_v3_large", path)
    model = build("deeplabv3", backbone="mobilenet_v3_large", backbone_weights=str(path))
    assert torch.equal(model.net.backbone.state_dict()["0.0.weight"], saved["features.0.0.weight"])
    assert torch.equal(model.net.backbone.state_dict()["16.1.running_mean"], saved["features.16.1.running_mean"])


@pytest.mark.parametrize("problem", ["missing", "corrupt", "no_tensors", "other_architecture"])
def test_bad_backbone_weights_are_one_line_user_errors(tmp_path, problem):
    path = tmp_path / "weights.pth"
    if problem == "corrupt":
        path.write_bytes(os.urandom(2048))
    elif problem == "no_tensors":
        torch.save({"epoch": 3, "model": {"note": "no weights"}}, path)
    elif problem == "other_architecture":
        torch.save({"blocks.0.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(UserError) as err:
        build("deeplabv3", backbone="mobilenet_v3_large", backbone_weights=str(path))
    message = str(err.value)
    assert message.startswith("model.backbone_weights:") and str(path) in message and "\n" not in message
    expected = {"missing": "no such file", "corrupt": "unreadable", "no_tensors": "holds no state dict",
                "other_architecture": "no tensor"}[problem]
    assert expected in message


def test_whole_model_weights_round_trip_and_skip_a_head_of_another_size(tmp_path):
    path = tmp_path / "unet.pth"
    trained = build("unet", num_classes=5)
    torch.nn.init.normal_(trained.head.weight)
    torch.save(trained.state_dict(), path)
    same = build("unet", num_classes=5, weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), same.state_dict().values()))
    other = build("unet", num_classes=3, weights=str(path))  # fine-tuning to other classes: the head is new
    assert torch.equal(other.stem[0].weight, trained.stem[0].weight) and other.head.out_channels == 3


# --- the loss ----------------------------------------------------------------------------


def _manual_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
    """Mean of -log softmax at the true class, over the labelled pixels only, pixel by pixel."""
    total, count = 0.0, 0
    for b, y, x in torch.nonzero(target != ignore).tolist():
        total = total - torch.log_softmax(logits[b, :, y, x], dim=0)[target[b, y, x]]
        count += 1
    return total / count


@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_ignored_pixels_contribute_nothing(dice_weight):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 1:3, 2:5] = 255
    target[1, :, 0] = 255
    loss_fn = SegmentationLoss(ignore_index=255, dice_weight=dice_weight)
    loss = loss_fn(logits, target)
    loss.backward()
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    assert torch.count_nonzero(logits.grad[ignored]) == 0
    assert torch.count_nonzero(logits.grad[~ignored]) > 0
    changed = logits.detach().clone()
    changed[ignored] = 100.0  # whatever the model says there
    assert loss_fn(changed, target).item() == pytest.approx(loss.item(), abs=1e-6)
    if not dice_weight:
        assert loss.item() == pytest.approx(_manual_cross_entropy(logits.detach(), target, 255).item(), rel=1e-6)


def test_dice_equals_a_hand_computation():
    # Four pixels, two classes; softmax of (0, log 3) is (1/4, 3/4), of (log 3, 0) is (3/4, 1/4).
    third = math.log(3.0)
    logits = torch.tensor([[0.0, third], [0.0, third], [third, 0.0], [third, 0.0]]).T.reshape(1, 2, 2, 2)
    target = torch.tensor([1, 0, 0, 255]).reshape(1, 2, 2)  # the last pixel is ignored
    # labelled pixels: p1 = (.25,.75) t=1; p2 = (.25,.75) t=0; p3 = (.75,.25) t=0
    # class 0: intersection .25 + .75 = 1.0; sum p = .25+.25+.75 = 1.25; sum t = 2 -> (2*1 + 1) / (3.25 + 1)
    # class 1: intersection .75;             sum p = .75+.75+.25 = 1.75; sum t = 1 -> (1.5 + 1) / (2.75 + 1)
    dice = 1 - ((3.0 / 4.25) + (2.5 / 3.75)) / 2
    ce = -(math.log(0.75) + math.log(0.25) + math.log(0.75)) / 3
    loss = SegmentationLoss(ignore_index=255, dice_weight=2.0)(logits, target)
    assert loss.item() == pytest.approx(ce + 2.0 * dice, rel=1e-6)


def test_a_batch_with_no_labelled_pixel_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = SegmentationLoss(dice_weight=1.0)(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert torch.isfinite(loss) and torch.count_nonzero(logits.grad) == 0


def test_segmentation_losses_are_registered_beside_classification():
    from conftest import compose_cfg

    cfg = compose_cfg(["task=segmentation", "loss=ce_dice"])
    assert cfg.loss.dice_weight == 1.0 and cfg.loss.ignore_index == 255
    loss = LOSSES.get("ce_dice", ("segmentation",))(cfg.loss)
    assert isinstance(loss, SegmentationLoss) and loss.dice_weight == 1.0
    assert not isinstance(LOSSES.get("cross_entropy", ("classification",))(cfg.loss), SegmentationLoss)
    with pytest.raises(UserError, match="is a segmentation loss"):
        LOSSES.get("ce_dice", ("classification",))
