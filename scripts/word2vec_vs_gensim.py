"""word2vec speed and quality: gensim's Word2Vec against cvtrain's task=word2vec.

Both train on the same corpus (cvtrain's reading of it: ShapesWorld's captions by
default, tokenized once and handed to gensim as lists of words) with the same settings:
skip-gram, negative=5, window=5, vector_size=100, sample=1e-3, min_count=5, alpha 0.025
falling to 1e-4, 5 epochs. gensim runs with workers=2, cvtrain with its task default
(one thread). Rounds alternate, so machine noise hits both alike.

words/s is the corpus's words times the epochs over the training time: gensim's
`train()` (its vocabulary built beforehand), cvtrain's `Trainer.fit()` with its corpus
and vocabulary built beforehand; fit also evaluates once and saves the checkpoints and
vector files at the end. Analogy accuracy is on ShapesWorld's analogy set
(cvtrain.data.shapesworld.analogies), scored by cvtrain's evaluate_analogies, which
tests/test_word_vectors.py shows equal to gensim's evaluate_word_analogies.

    python scripts/word2vec_vs_gensim.py [--rounds 3] [--epochs 5] [--workers 2] [OVERRIDE ...]

OVERRIDEs go to cvtrain (dataset=text dataset.root=FILE trains both on a text file).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import compose  # noqa: E402  (one way to compose a config for scripts)

SETTINGS = {"window": 5, "negative": 5, "dim": 100, "sample": 1e-3, "min_count": 5, "alpha": 0.025, "min_alpha": 1e-4}


def cvtrain_overrides(epochs: int, extra: list[str]) -> list[str]:
    s = SETTINGS
    return ["task=word2vec", "model=skipgram", f"model.window={s['window']}", f"model.negative={s['negative']}",
            f"model.dim={s['dim']}", f"task.sample={s['sample']}", f"task.min_count={s['min_count']}",
            f"optimizer.lr={s['alpha']}", f"scheduler.min_lr_ratio={s['min_alpha'] / s['alpha']}",
            f"trainer.epochs={epochs}", f"trainer.val_every={epochs}", "trainer.progress=none",
            "logger.images=false", *extra]


def train_gensim(sentences, epochs: int, workers: int, seed: int):
    """(seconds of train(), the vectors as cvtrain's WordVectors)."""
    from gensim.models import Word2Vec

    from cvtrain.metrics.embeddings import WordVectors

    s = SETTINGS
    model = Word2Vec(vector_size=s["dim"], window=s["window"], sg=1, hs=0, negative=s["negative"], sample=s["sample"],
                     min_count=s["min_count"], alpha=s["alpha"], min_alpha=s["min_alpha"], workers=workers, seed=seed)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=epochs)
    seconds = time.perf_counter() - start
    return seconds, WordVectors(list(model.wv.index_to_key), model.wv.vectors)


def train_cvtrain(cfg, task, seed: int, folder: Path):
    """(seconds of Trainer.fit(), the vectors); the task keeps its corpus between rounds."""
    from cvtrain.engine.trainer import Trainer

    cfg.seed = seed
    trainer = Trainer(cfg, task, folder / f"run{seed}")
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    task.active = trainer.eval_modules()
    return seconds, task.word_vectors()


def warm_up() -> None:
    """Imports that the first optimizer triggers (torch._dynamo: seconds), outside the clock."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="gensim's worker threads")
    parser.add_argument("overrides", nargs="*", default=[])
    args = parser.parse_args()

    from cvtrain.metrics.embeddings import evaluate_analogies
    from cvtrain.registry import TASKS

    cfg = compose(cvtrain_overrides(args.epochs, args.overrides))
    task = TASKS.get("word2vec")(cfg)
    sentences = task.sentences()
    task.build_dataset("train")
    words = sum(len(s) for s in sentences) * args.epochs
    questions = task.shapes_questions()
    warm_up()
    print(f"corpus: {cfg.dataset.name}, {len(sentences)} sentences, {words // args.epochs} words, {args.epochs} epochs; "
          f"settings {SETTINGS}; gensim workers={args.workers}, cvtrain trainer.num_threads={cfg.trainer.num_threads} "
          f"task.chunk_words={cfg.task.chunk_words}")
    results: dict[str, list[tuple[float, float]]] = {"gensim": [], "cvtrain": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.rounds):
            for name in results:
                if name == "gensim":
                    seconds, vectors = train_gensim(sentences, args.epochs, args.workers, seed)
                else:
                    seconds, vectors = train_cvtrain(cfg, task, seed, Path(tmp))
                accuracy = evaluate_analogies(vectors, questions).accuracy
                results[name].append((words / seconds, accuracy))
                print(f"round {seed + 1} {name:8s} {words / seconds:12,.0f} words/s  {seconds:6.2f} s  "
                      f"analogy accuracy {100 * accuracy:6.2f} %")
    print(f"\n{'':8s} {'median words/s':>15s} {'mean analogy accuracy':>22s}")
    for name, rows in results.items():
        print(f"{name:8s} {statistics.median(r[0] for r in rows):15,.0f} {100 * statistics.mean(r[1] for r in rows):21.2f}%")
    ratio = statistics.median(r[0] for r in results["cvtrain"]) / statistics.median(r[0] for r in results["gensim"])
    print(f"cvtrain / gensim words/s: {ratio:.2f}")


if __name__ == "__main__":
    main()
