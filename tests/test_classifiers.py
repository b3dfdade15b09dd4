"""Classifier builders: shapes, training steps, freezing, and weights from local files."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from cvtrain.errors import UserError
from cvtrain.models import classifiers
from cvtrain.registry import MODELS

NAMES = ["cnn", "resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large"]


def make_cfg(name: str, **over) -> object:
    base = dict(name=name, family="classifier", weights=None, freeze_backbone=False, dropout=0.1, width=8)
    return OmegaConf.create({**base, **over})


def build(name: str, num_classes: int = 4, in_channels: int = 3, **over) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.get(name, ("classifier",))(make_cfg(name, **over), num_classes=num_classes, in_channels=in_channels)


def test_every_classifier_is_registered():
    assert set(NAMES) <= set(MODELS.names(("classifier",)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 1, 28, 28)])
def test_forward_backward_channels_last(name, shape):
    model = build(name, num_classes=4, in_channels=shape[1]).to(memory_format=torch.channels_last)
    images = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 3])
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(images)
    assert logits.shape == (2, 4)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed[-2:]), "head did not change"
    assert sum(changed) > 2, "backbone did not change"


def test_small_cnn_takes_tiny_inputs_and_width():
    model = build("cnn", num_classes=10, in_channels=1, width=4).eval()
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert model.head.in_features == 16


def test_compiles_without_graph_breaks():
    model = build("cnn")
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    assert compiled(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("name", ["cnn", "resnet18", "mobilenet_v3_small"])
def test_freeze_backbone_trains_head_only_and_keeps_bn_in_eval(name):
    model = build(name, freeze_backbone=True)
    head = {id(p) for p in classifiers.head_parameters(model)}
    assert len(head) == 2
    for p in model.parameters():
        assert p.requires_grad == (id(p) in head)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    stats = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 32, 32) * 5 + 3)
    assert all(torch.equal(s, bn.running_mean) for s, bn in zip(stats, bns))
    assert model.head.training


def test_unfrozen_bn_updates_running_stats():
    model = build("cnn").train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32) + 3)
    assert not torch.equal(before, bn.running_mean)


def save_resnet18(path) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_resnet18_weights_from_file(tmp_path):
    path = tmp_path / "resnet18-f37072fd.pth"
    saved = save_resnet18(path)
    model = build("resnet18", num_classes=5, weights=str(path))
    own = model.backbone.state_dict()
    for key, tensor in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], tensor), key
    assert model.head.out_features == 5


def test_nested_weights_and_grayscale_sums_rgb_filters(tmp_path):
    path = tmp_path / "ckpt.pt"
    saved = save_resnet18(tmp_path / "plain.pth")
    torch.save({"state_dict": saved, "epoch": 3}, path)
    model = build("resnet18", num_classes=2, in_channels=1, weights=str(path))
    assert torch.allclose(model.backbone.conv1.weight, saved["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, saved["layer4.1.bn2.running_var"])


def test_weights_for_another_architecture(tmp_path):
    path = tmp_path / "resnet18.pth"
    save_resnet18(path)
    with pytest.raises(UserError) as err:
        build("mobilenet_v3_small", weights=str(path))
    assert str(path) in str(err.value) and "mobilenet_v3_small" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(UserError) as err:
        build("resnet18", weights=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_weights_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UserError) as err:
        build("resnet18", weights=str(path))
    assert "refused" in str(err.value) and "unreadable" in str(err.value) and "\n" not in str(err.value)


class _Payload:
    """Unpickling this object would create a marker file: a stand-in for malicious code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(UserError) as err:
        build("resnet18", weights=str(path))
    assert not marker.exists(), "the pickle's code ran"
    assert "refused" in str(err.value) and "unsafe" in str(err.value) and "\n" not in str(err.value)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError):
        build("cnn", dropout=1.5)
    with pytest.raises(UserError):
        build("cnn", width=0)
