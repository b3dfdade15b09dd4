"""GAN generators, discriminators and losses (cvtrain/models/gan.py, cvtrain/tasks/gan_losses.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from cvtrain.errors import UserError
from cvtrain.models.gan import ConditionalBatchNorm2d, dcgan, mlp_gan
from cvtrain.registry import LOSSES, MODELS
from cvtrain.tasks.gan_losses import gradient_penalty

SMALL = OmegaConf.create({"latent_dim": 16, "width": 8, "hidden_dim": 32})
BUILDERS = {"mlp_gan": mlp_gan, "dcgan": dcgan}


def _build(name, size=32, channels=3, classes=0, cfg=SMALL):
    torch.manual_seed(0)
    return MODELS.get(name, ("gan",))(cfg, image_size=size, channels=channels, num_classes=classes)


def _labels(classes, n=4):
    return torch.arange(n) % classes if classes else None


def test_builders_and_losses_are_registered_in_the_gan_family():
    assert set(MODELS.names(("gan",))) >= {"mlp_gan", "dcgan"}
    assert set(LOSSES.names(("gan",))) >= {"non_saturating", "hinge", "lsgan", "wgan_gp"}


@pytest.mark.parametrize("name", ["mlp_gan", "dcgan"])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("classes", [0, 5])
def test_shapes_and_ranges(name, size, channels, classes):
    models = _build(name, size, channels, classes)
    g, d = models["generator"], models["discriminator"]
    z = torch.randn(4, g.latent_dim)
    images = g(z, _labels(classes))
    assert images.shape == (4, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1
    logits = d(images, _labels(classes))
    assert logits.shape == (4,) and torch.isfinite(logits).all()


def test_defaults_when_the_config_is_empty():
    models = dcgan(OmegaConf.create({}), image_size=32, channels=3, num_classes=0)
    assert models["generator"].latent_dim == 100
    assert models["discriminator"].features[0].out_channels == 32  # width 32: trainable on a CPU


def test_the_builders_class_count_wins_over_the_configs():
    cfg = OmegaConf.merge(SMALL, {"num_classes": 7})
    assert _class_rows(dcgan(cfg, 32, 3, 0)["generator"]) == {7}
    assert _class_rows(dcgan(cfg, 32, 3, 3)["generator"]) == {3}
    assert _class_rows(dcgan(SMALL, 32, 3, 0)["generator"]) == set()


def _class_rows(generator: nn.Module) -> set[int]:
    """The row counts of the generator's class embeddings (conditional batch norm's)."""
    return {m.num_embeddings for m in generator.modules() if isinstance(m, nn.Embedding)}


@pytest.mark.parametrize("name", ["mlp_gan", "dcgan"])
def test_a_conditional_generators_output_depends_on_the_label(name):
    models = _build(name, classes=4)
    g, d = models["generator"].eval(), models["discriminator"].eval()
    z = torch.randn(1, g.latent_dim).expand(4, -1)
    images = g(z, torch.arange(4))
    assert not torch.allclose(images[0], images[1])
    same = images[:1].expand(4, -1, -1, -1)
    logits = d(same, torch.arange(4))
    assert not torch.allclose(logits[0], logits[1]), "the projection term depends on the label"
    with pytest.raises(ValueError, match="pass labels"):
        g(z)


@pytest.mark.parametrize("size", [16, 48, 128])
def test_dcgan_refuses_other_sizes_in_one_line(size):
    with pytest.raises(UserError, match="valid: 32, 64") as error:
        dcgan(SMALL, image_size=size, channels=3, num_classes=0)
    assert "\n" not in str(error.value)


def test_dcgan_init_statistics():
    models = dcgan(OmegaConf.create({"width": 64}), image_size=64, channels=3, num_classes=0)
    for net in models.values():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.weight.numel() > 10_000:
                assert m.weight.mean().item() == pytest.approx(0.0, abs=0.002)
                assert m.weight.std().item() == pytest.approx(0.02, rel=0.05)
            if isinstance(m, nn.BatchNorm2d) and m.weight.numel() >= 128:
                assert m.weight.mean().item() == pytest.approx(1.0, abs=0.01)
                assert m.weight.std().item() == pytest.approx(0.02, rel=0.3)
                assert (m.bias == 0).all()


def _kinds(seq):
    return [type(m).__name__ for m in seq]


@pytest.mark.parametrize("size,stages", [(32, 3), (64, 4)])
def test_dcgan_layer_structure(size, stages):
    models = dcgan(SMALL, image_size=size, channels=3, num_classes=0)
    generator = models["generator"]
    g = [kind for block in generator.blocks for kind in _kinds(block.children())] + _kinds(generator.out)
    assert g == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * stages + ["ConvTranspose2d", "Tanh"]
    d = _kinds(models["discriminator"].features)
    no_bn_on_input = ["Conv2d", "LeakyReLU"]
    assert d == no_bn_on_input + ["Conv2d", "BatchNorm2d", "LeakyReLU"] * (stages - 1)
    assert all(m.negative_slope == 0.2 for m in models["discriminator"].modules() if isinstance(m, nn.LeakyReLU))
    strides = [m.stride for m in models["discriminator"].features if isinstance(m, nn.Conv2d)]
    assert strides == [(2, 2)] * stages, "strided convs, no pooling"
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in models["discriminator"].modules())


def test_dcgan_layer_norm_critic_for_wgan_gp():
    """A WGAN-GP critic is normalised per sample: a sample's logit does not depend on the batch."""
    d = dcgan(OmegaConf.merge(SMALL, {"d_norm": "layer"}), image_size=32, channels=3, num_classes=0)["discriminator"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert sum(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in d.modules()) == 2
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(d(x)[:2], d(x[:2]), atol=1e-5)
    with pytest.raises(UserError, match="valid: batch, layer, spectral, none"):
        dcgan(OmegaConf.merge(SMALL, {"d_norm": "instance"}), image_size=32, channels=3, num_classes=0)



def test_spectral_norm_critic_has_unit_spectral_norms_and_no_batch_statistics():
    d = dcgan(OmegaConf.merge(SMALL, {"d_norm": "spectral"}), image_size=32, channels=3, num_classes=4)["discriminator"]
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in d.modules())
    x, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    for _ in range(30):  # power iterations run in training-mode forward passes
        d(x, labels)
    weights = [m.weight for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Embedding))]
    assert len(weights) == 5  # four convs and the projection's embedding
    for w in weights:
        assert torch.linalg.matrix_norm(w.detach().flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.05)
    d.eval()
    assert torch.allclose(d(x, labels)[:2], d(x[:2], labels[:2]), atol=1e-5), "per sample, unlike batch norm"


def test_conditional_batch_norm_scales_and_shifts_per_class():
    norm = ConditionalBatchNorm2d(3, num_classes=2)
    with torch.no_grad():
        norm.scale.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, -0.5, 0.0]]))
        norm.shift.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]]))
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    plain = F.batch_norm(x, None, None, training=True)
    gamma = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.5, 1.0]])[labels][:, :, None, None]
    beta = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]])[labels][:, :, None, None]
    assert torch.allclose(norm(x, labels), plain * gamma + beta, atol=1e-5)


def test_a_conditional_dcgan_generator_modulates_every_stage_by_class():
    g = dcgan(SMALL, image_size=32, channels=3, num_classes=4)["generator"]
    assert g.blocks[0].conv.in_channels == SMALL.latent_dim, "z alone enters; the class modulates the norms"
    assert all(isinstance(block.norm, ConditionalBatchNorm2d) for block in g.blocks)

def test_an_ac_gan_discriminator_also_classifies_from_the_pooled_features():
    cfg = OmegaConf.merge(SMALL, {"d_classifier": True})
    d = dcgan(cfg, image_size=32, channels=3, num_classes=5)["discriminator"]
    x, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    logits, classes = d(x, labels)
    assert logits.shape == (4,) and classes.shape == (4, 5)
    pooled = d.features(x).sum(dim=(2, 3))
    assert torch.allclose(classes, d.classifier(pooled), atol=1e-6)
    plain = dcgan(SMALL, image_size=32, channels=3, num_classes=5)["discriminator"]
    assert plain.classifier is None and plain(x, labels).shape == (4,), "without d_classifier: the logits alone"
    unconditional = dcgan(cfg, image_size=32, channels=3, num_classes=0)["discriminator"]
    assert unconditional.classifier is None, "no classes, nothing to classify"


def test_gradient_penalty_of_an_ac_gan_critic_uses_its_real_fake_logit():
    cfg = OmegaConf.merge(SMALL, {"d_classifier": True, "d_norm": "layer"})
    d = dcgan(cfg, image_size=32, channels=3, num_classes=3)["discriminator"]
    real, fake, labels, eps = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.tensor([0, 2]), torch.rand(2)
    mixed = (eps.view(-1, 1, 1, 1) * real + (1 - eps.view(-1, 1, 1, 1)) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(mixed, labels)[0].sum(), mixed)
    expected = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(gradient_penalty(d, real, fake, labels, eps=eps), expected, atol=1e-6)


# --- losses -------------------------------------------------------------------------

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def _loss(name, **cfg):
    return LOSSES.get(name, ("gan",))(OmegaConf.create(cfg))


def test_non_saturating_is_bce():
    loss = _loss("non_saturating")
    bce = F.binary_cross_entropy
    expect_d = bce(torch.sigmoid(REAL), torch.ones(3)) + bce(torch.sigmoid(FAKE), torch.zeros(3))
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(expect_d.item(), rel=1e-5)
    assert loss.g_loss(FAKE).item() == pytest.approx(-torch.log(torch.sigmoid(FAKE)).mean().item(), rel=1e-5)
    assert not loss.gradient_penalty


def test_hinge():
    loss = _loss("hinge")
    # real: max(0, 1-2)=0, 2, 0.5 ; fake: max(0, 1-3)=0, 1, 2.5
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert loss.g_loss(FAKE).item() == pytest.approx(1.5 / 3)  # -mean(-3, 0, 1.5)


def test_lsgan():
    loss = _loss("lsgan")
    real = 0.5 * (1 + 4 + 0.25) / 3
    fake = 0.5 * (9 + 0 + 2.25) / 3
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(real + fake)
    assert loss.g_loss(FAKE).item() == pytest.approx(0.5 * (16 + 1 + 0.25) / 3)


def test_wgan_gp():
    loss = _loss("wgan_gp")
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(FAKE.mean().item() - REAL.mean().item())
    assert loss.g_loss(FAKE).item() == pytest.approx(-FAKE.mean().item())
    assert loss.gradient_penalty and loss.gp_weight == 10.0
    assert _loss("wgan_gp", gp_weight=5.0).gp_weight == 5.0


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w for every sample, so the penalty is (||w|| - 1)^2."""

    def __init__(self, w):
        super().__init__()
        self.linear = nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.linear.weight.copy_(w.view(1, -1))

    def forward(self, x, labels=None):
        return self.linear(x.flatten(1)).squeeze(1)


def test_gradient_penalty_of_a_linear_critic():
    w = torch.tensor([3.0, 0.0, 4.0, 0.0])  # ||w|| = 5
    d = LinearCritic(w)
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    penalty = gradient_penalty(d, real, fake)
    assert penalty.item() == pytest.approx(16.0)
    penalty.backward()  # create_graph: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert torch.allclose(d.linear.weight.grad.view(-1), 2 * 4 * w / 5)


def test_gradient_penalty_matches_a_manual_computation():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 1), nn.Flatten(0))
    real, fake, eps = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2), torch.tensor([0.0, 0.3, 1.0])
    penalty = gradient_penalty(lambda x: d(x), real, fake, eps=eps)
    expect = 0.0
    for i in range(3):
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(d(x).sum(), x)
        expect += (g.norm() - 1) ** 2 / 3
    assert penalty.item() == pytest.approx(expect.item(), rel=1e-5)
    penalty.backward()
    weights = [p for p in d.parameters() if p.dim() > 1]  # the last bias does not move the input gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_gradient_penalty_passes_labels_to_a_conditional_critic():
    d = _build("dcgan", classes=3)["discriminator"]
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    penalty = gradient_penalty(d, real, fake, labels=_labels(3))
    penalty.backward()
    assert torch.isfinite(penalty) and d.head.embed.weight.grad is not None


def _critic_batch():
    """A layer-norm conditional DCGAN critic and a fixed batch of 4 (eps fixed: reproducible)."""
    torch.manual_seed(0)
    d = dcgan(OmegaConf.merge(SMALL, {"d_norm": "layer"}), 32, 3, 3)["discriminator"]
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    return d, real, fake, torch.tensor([0.1, 0.5, 0.7, 0.9]), torch.arange(4) % 3


def _critic_loss(d, real, fake, eps, labels):
    loss = _loss("wgan_gp")
    penalty = gradient_penalty(d, real, fake, labels, eps=eps)
    return loss.d_loss(d(real, labels), d(fake, labels)) + loss.gp_weight * penalty


def _ddp_critic_rank(rank: int) -> dict:
    """One rank: the DDP-wrapped critic on its half of the batch, one backward of d_loss + penalty."""
    from torch.nn.parallel import DistributedDataParallel

    d, real, fake, eps, labels = _critic_batch()
    mine = slice(2 * rank, 2 * rank + 2)
    ddp = DistributedDataParallel(d)
    _critic_loss(ddp, real[mine], fake[mine], eps[mine], labels[mine]).backward()
    return {"grads": torch.cat([p.grad.flatten() for p in d.parameters()]).tolist()}


def test_gradient_penalty_through_ddp_matches_one_process(tmp_path):
    """The double backward through a DDP critic (three forwards, one backward) reduces the
    penalty's parameter gradients with the rest: DDP's mean over ranks is the mean of the
    two half-batch losses' gradients computed in one process."""
    from conftest import run_gloo_ranks

    d, real, fake, eps, labels = _critic_batch()
    halves = [slice(0, 2), slice(2, 4)]
    (sum(_critic_loss(d, real[h], fake[h], eps[h], labels[h]) for h in halves) / 2).backward()
    want = torch.cat([p.grad.flatten() for p in d.parameters()])
    for rank in run_gloo_ranks(_ddp_critic_rank, tmp_path):
        assert torch.allclose(torch.tensor(rank["grads"]), want, atol=1e-5)


# --- one optimisation step of each model with each loss -------------------------------


def _step(loss, g, d, real, labels):
    """One D step, then one G step, as the gan task does; returns the two losses."""
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    z = torch.randn(real.shape[0], g.latent_dim)
    fake = g(z, labels)
    d_loss = loss.d_loss(d(real, labels), d(fake.detach(), labels))
    if loss.gradient_penalty:
        d_loss = d_loss + loss.gp_weight * gradient_penalty(d, real, fake, labels)
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = loss.g_loss(d(g(z, labels), labels))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss, g_loss


@pytest.mark.parametrize("name", ["mlp_gan", "dcgan"])
@pytest.mark.parametrize("loss_name", ["non_saturating", "hinge", "lsgan", "wgan_gp"])
@pytest.mark.parametrize("classes", [0, 3])
def test_one_training_step(name, loss_name, classes):
    models = _build(name, 32, 3, classes)
    g, d = models["generator"], models["discriminator"]
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in models.items()}
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    d_loss, g_loss = _step(_loss(loss_name), g, d, real, _labels(classes))
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    for key, module in models.items():
        params = list(module.parameters())
        assert all(torch.isfinite(p).all() for p in params), key
        assert all(p.grad is not None for p in params), f"{key}: no unused parameters (DDP would need a search)"
        # a Wasserstein or balanced hinge loss leaves the last bias a zero gradient: check the weights move
        moved = [not torch.equal(a, b) for a, b, p in zip(before[key], params, params) if p.dim() > 1]
        assert all(moved), key


# --- progressive GAN ----------------------------------------------------------------


def _progan(size=32, channels=3, classes=0):
    torch.manual_seed(0)
    return MODELS.get("progan", ("gan",))(OmegaConf.create({"latent_dim": 16, "width": 16}), size, channels, classes)


@pytest.mark.parametrize("classes", [0, 3])
def test_progan_grows_to_the_image_size(classes):
    models = _progan(32, 1, classes)
    g, d = models["generator"], models["discriminator"]
    assert g.phases() == d.phases() == 3  # 4 -> 8 -> 16 -> 32
    z, labels = torch.randn(4, g.latent_dim), _labels(classes)
    for phase in range(g.phases() + 1):
        if phase:
            n_g, n_d = len(list(g.parameters())), len(list(d.parameters()))
            g.grow(), d.grow()
            assert len(list(g.parameters())) > n_g and len(list(d.parameters())) > n_d, "grow() adds a stage"
            g.alpha = d.alpha = 0.5
        images = g(z, labels)
        assert images.shape == (4, 1, 4 * 2**phase, 4 * 2**phase) and images.abs().max() <= 1
        assert d(images, labels).shape == (4,)
    with pytest.raises(ValueError, match="full resolution"):
        g.grow()


def test_progan_fade_in_starts_from_the_previous_resolution():
    models = _progan(16)
    g, d = models["generator"], models["discriminator"]
    z, images = torch.randn(3, g.latent_dim), torch.rand(3, 3, 8, 8) * 2 - 1
    g.grow(), d.grow()  # 8x8, faded in
    g.alpha = d.alpha = 1.0
    before_g, before_d = g(z), d(images)
    g.grow(), d.grow()  # 16x16, alpha 0
    assert g.alpha == 0.0
    assert torch.allclose(g(z), F.interpolate(before_g, scale_factor=2, mode="nearest"), atol=1e-6)
    assert torch.allclose(d(F.interpolate(images, scale_factor=2, mode="nearest")), before_d, atol=1e-5)
    g.alpha = 1.0
    assert not torch.allclose(g(z), F.interpolate(before_g, scale_factor=2, mode="nearest"), atol=1e-3)


def test_progan_tricks():
    from cvtrain.models.progan import EqualizedConv2d, MinibatchStd, PixelNorm

    conv = EqualizedConv2d(8, 4, 3, 1)
    assert conv.weight.std().item() == pytest.approx(1.0, rel=0.2), "weights N(0, 1) ..."
    assert conv.scale == pytest.approx((2 / (8 * 9)) ** 0.5), "... scaled by He's constant at runtime"
    x = torch.randn(2, 5, 3, 3) * 7
    assert torch.allclose(PixelNorm()(x).pow(2).mean(dim=1), torch.ones(2, 3, 3), atol=1e-4)
    same = MinibatchStd()(torch.ones(4, 2, 3, 3))
    assert same.shape == (4, 3, 3, 3) and same[:, 2].abs().max() < 1e-3, "identical samples: std 0"
    g = _progan(8)["generator"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


def test_progan_refuses_sizes_that_are_not_powers_of_two():
    with pytest.raises(UserError, match="power of two"):
        _progan(48)


@pytest.mark.parametrize("loss_name", ["non_saturating", "wgan_gp"])
def test_progan_training_step_while_fading_in(loss_name):
    models = _progan(8, 3, 3)
    g, d = models["generator"], models["discriminator"]
    g.grow(), d.grow()
    g.alpha = d.alpha = 0.5
    d_loss, g_loss = _step(_loss(loss_name), g, d, torch.rand(4, 3, 8, 8) * 2 - 1, _labels(3))
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert all(torch.isfinite(p).all() for m in models.values() for p in m.parameters())
