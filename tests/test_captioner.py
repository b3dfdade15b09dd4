"""The captioners: teacher-forced logits equal step-by-step generation's, for both kinds."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cvtrain.models.captioner import AttentionCaptioner, Captioner
from cvtrain.models.classifiers import as_encoder, cnn
from cvtrain.models.decoding import beam_search, greedy
from cvtrain.models.recurrent import build_recurrent

VOCAB, EMBED, HIDDEN, GRID = 17, 8, 12, 2


def _model(kind: str, attention: bool, layers: int = 2):
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": "cnn", "family": "classifier", "weights": None, "freeze_backbone": False,
                            "dropout": 0.0, "width": 4})
    encoder, features = as_encoder(cnn(cfg, num_classes=1, in_channels=3), grid=GRID)
    core = build_recurrent(kind, "course", 2 * EMBED, HIDDEN, layers)
    args = (VOCAB, EMBED, core, HIDDEN, layers, kind == "lstm")
    model = AttentionCaptioner(encoder, features, GRID, *args) if attention else Captioner(encoder, features, *args)
    return model.eval()


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_teacher_forcing_equals_stepwise_decoding(kind, attention):
    model = _model(kind, attention)
    images = torch.randn(3, 3, 16, 16)
    tokens = torch.randint(0, VOCAB, (3, 6))
    with torch.no_grad():
        forced = model(images, tokens).log_softmax(dim=-1)
        state = model.init_state(images)
        for t in range(tokens.shape[1]):
            log_probs, state = model.step(tokens[:, t], state)
            torch.testing.assert_close(log_probs, forced[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", [False, True])
def test_generation_of_a_batch_equals_one_image_at_a_time(attention):
    model = _model("gru", attention)
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        for search in (lambda s: greedy(model.step, s, 1, 2, 7), lambda s: beam_search(model.step, s, 1, 2, 7, 3)):
            together = search(model.init_state(images))
            for i in range(4):
                alone = search(model.init_state(images[i : i + 1]))[0]
                assert together[i, : len(alone)].tolist() == alone.tolist()


@pytest.mark.parametrize(("kind", "attention"), [("gru", True), ("lstm", False)])
def test_the_registered_builder_assembles_the_model_the_config_names(kind, attention):
    """task=captioning asks MODELS for "captioner": built from the model config's keys, it
    has the parts, and so the checkpoint keys, of the captioner assembled by hand."""
    from conftest import compose_cfg

    from cvtrain.registry import MODELS

    cfg = compose_cfg(["task=captioning", f"model={kind}", f"model.attention={attention}", f"model.embed_dim={EMBED}",
                       f"model.hidden_dim={HIDDEN}", "model.num_layers=2", "model.encoder_width=4",
                       f"model.encoder_grid={GRID}"])
    built = MODELS.get("captioner", families=("captioner",))(cfg.model, vocab_size=VOCAB)
    by_hand = _model(kind, attention)
    assert type(built) is type(by_hand)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in by_hand.state_dict().items()}
