"""task=language_modeling: learns below the unigram baseline, evaluates and continues prompts."""

from __future__ import annotations

import json

import pytest
from conftest import cli_in_process, read_jsonl

from cvtrain.engine import checkpoint

SMALL = ["task=language_modeling", "dataset.num_train=400", "dataset.num_val=100", "dataset.num_test=100",
         "trainer.epochs=4", "trainer.progress=plain", "model.hidden_dim=64", "model.embed_dim=32",
         "dataset.batch_size=16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("lm") / "run"
    cli_in_process([*SMALL, f"hydra.run.dir={run}"])
    return run


@pytest.mark.slow
def test_word_model_beats_the_unigram_baseline(trained):
    records = read_jsonl(trained / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    last = records[-1]
    assert last["ppl"] < last["unigram_ppl"] / 3, last
    assert records[1]["ppl"] < records[0]["ppl"], "perplexity falls with training"
    vocab = checkpoint.load(trained / "checkpoints" / "best.pt")["task"]["vocab"]
    assert "circle" in vocab["tokens"] and vocab["tokens"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]


@pytest.mark.slow
def test_eval_from_checkpoint_reproduces_validation_perplexity(trained, tmp_path):
    best = trained / "checkpoints" / "best.pt"
    out = tmp_path / "eval"
    cli_in_process([*SMALL, "mode=eval", f"ckpt={best}", "split=val", f"hydra.run.dir={out}"])
    result = json.loads((out / "eval.json").read_text())
    assert result["ppl"] == pytest.approx(checkpoint.load(best)["trainer"]["best"], rel=1e-9)


@pytest.mark.slow
def test_predict_continues_a_prompt(trained, tmp_path):
    out = tmp_path / "predict"
    cli_in_process([*SMALL, "mode=predict", f"ckpt={trained / 'checkpoints' / 'best.pt'}",
                    "prompt=a large red", f"hydra.run.dir={out}"])
    record = read_jsonl(out / "predictions.jsonl")[0]
    assert record["input"] == "a large red"
    assert record["prediction"].startswith("a large red ") and record["continuation"]


def test_character_level_on_a_text_file_reports_bits_per_character(tmp_path):
    text = tmp_path / "corpus.txt"
    lines = [f"the {c} cat sat on the {m} mat" for c in ("black", "white", "grey") for m in ("red", "blue")] * 60
    text.write_text("\n".join(lines))
    run = tmp_path / "run"
    cli_in_process(["task=language_modeling", "dataset=text", f"dataset.root={text}", "dataset.level=char",
                    "dataset.seq_len=32", "dataset.min_freq=1", "trainer.epochs=4", "trainer.progress=none",
                    "model=lstm", "model.hidden_dim=64", "model.embed_dim=16", "dataset.batch_size=16",
                    "trainer.num_threads=1", f"hydra.run.dir={run}"])
    last = read_jsonl(run / "metrics.jsonl")[-1]
    assert "bpc" in last and last["bpc"] == pytest.approx(last["loss"] / 0.6931471805599453)
    assert last["ppl"] < last["unigram_ppl"], last
