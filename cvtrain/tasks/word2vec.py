"""word2vec: word vectors from the words around each word (skip-gram or CBOW).

Training is word2vec.c's: sub-sampling of frequent words, a window drawn per word,
negative sampling from unigram^0.75 and/or hierarchical softmax, plain SGD whose rate
falls linearly from alpha to min_alpha. What makes it fast in PyTorch is the batch: a
training step takes dataset.batch_size chunks of task.chunk_words corpus words and
builds all their examples in a few tensor operations (word2vec_examples.py); then
each chunk is one SGD update, `step("main", loss)`, in corpus order, as the C tool
updates word after word. The updates stay small (about a thousand words each), as
word2vec's own are: one update over the whole batch sums so many gradients into the
few rows of a small vocabulary that it diverges. With a small vocabulary the loss of an
update comes from one matrix product over every (input word, output row) pair
(word2vec_losses.count_loss), not from gathered rows.

Evaluation scores the vectors (no data set): 3CosAdd analogy accuracy on the analogy set
of ShapesWorld's grammar (analogy_acc), on task.questions (questions_acc), and the
Spearman correlation on task.pairs (spearman), each as gensim computes it. Each
evaluation writes vectors.txt / vectors.bin (word2vec formats) and neighbours.md to the
run folder, and images/projection.png; mode=predict writes them for prompt="w1 w2 ...".
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cvtrain.data.shapesworld.analogies import write_analogy_questions
from cvtrain.data.text import Vocabulary
from cvtrain.data.word_stream import chunked_stream, corpus_words, count_words
from cvtrain.engine.distributed import env_from_os
from cvtrain.engine.task import Task
from cvtrain.errors import UserError
from cvtrain.metrics.embeddings import WordVectors, evaluate_analogies, evaluate_word_pairs, read_questions
from cvtrain.metrics.embeddings.scoring import existing_file
from cvtrain.registry import DATASETS, MODELS, TASKS
from cvtrain.tasks import word2vec_outputs as outputs
from cvtrain.tasks.word2vec_examples import ExampleSampler, Examples
from cvtrain.tasks.word2vec_huffman import HuffmanTree, huffman_tree
from cvtrain.tasks.word2vec_losses import as_targets, count_loss, example_loss, pair_counts

FIRST_WORD = len(Vocabulary.SPECIALS)  # rows before it are the vocabulary's special tokens
SPARSE_FROM = 20_000  # vocabulary rows from which gathered rows get sparse gradients
HS_SHARE = 0.8  # words per update with hierarchical softmax, as a share of task.chunk_words (_chunk_size)
COUNT_RATIO = 2  # count_loss when the (V, R) pairs are at most this times an update's scored rows


@TASKS.register("word2vec")
class Word2VecTask(Task):
    name = "word2vec"

    def __init__(self, cfg):
        super().__init__(cfg)
        tcfg = cfg.task
        for key, what in (("questions", "an analogy file in questions-words format"),
                          ("pairs", "a word pairs file in WordSim353 format")):
            if tcfg.get(key):
                existing_file(tcfg[key], f"task.{key}", what)
        self.vocab: Vocabulary | None = None
        self.counts: torch.Tensor | None = None
        self._sentences: list[list[str]] | None = None
        self._sampler: ExampleSampler | None = None
        self._shapes_questions = None

    # --- data -----------------------------------------------------------------
    def sentences(self) -> list[list[str]]:
        if self._sentences is None:
            builder = DATASETS.get(self.cfg.dataset.name, families=("word2vec",))
            self._sentences = corpus_words(builder(self.cfg.dataset, "train"), self.cfg.task.punctuation)
        return self._sentences

    def vocabulary(self) -> Vocabulary:
        if self.vocab is None:
            self.vocab, self.counts = count_words(self.sentences(), self.cfg.task.min_count)
        return self.vocab

    def build_dataset(self, split: str):
        """The whole corpus in chunks, whatever the split: word2vec is scored on analogy
        and similarity files, not on held-out text."""
        if not hasattr(self, "_chunks"):
            self._chunks = chunked_stream(self.sentences(), self.vocabulary(), self._chunk_size())
        return self._chunks

    def _chunk_size(self) -> int:
        """task.chunk_words, made smaller with hierarchical softmax, and lowered so that
        the chunks fill whole batches: a training epoch drops its last partial batch, and
        word2vec should see every word. The Huffman tree's top nodes are on nearly every
        word's path, so their rows sum more gradients per update than any word's row
        (HS_SHARE of the words); with negative sampling beside it, each input row sums
        two objectives' gradients (half again). On ShapesWorld: 2,500 words per update for
        negative sampling, 2,000 for hs alone, 1,000 for both, each a step below where the
        first updates diverge."""
        if self.cfg.task.chunk_words < 1:
            raise UserError(f"task.chunk_words must be at least 1, got {self.cfg.task.chunk_words}.")
        mcfg = self.cfg.model
        objectives = (mcfg.negative > 0) + bool(mcfg.hs)
        per_update = max(1, int(self.cfg.task.chunk_words * (HS_SHARE if mcfg.hs else 1.0) / max(1, objectives)))
        vocab, batch = self.vocabulary(), self.cfg.dataset.batch_size
        words = sum(1 for line in self.sentences() for word in line if word in vocab.stoi)
        chunks = math.ceil(math.ceil(words / per_update) / batch) * batch
        return max(1, math.ceil(words / chunks))

    def tree(self) -> HuffmanTree | None:
        """word2vec.c's Huffman tree over the words (not the special rows), for model.hs."""
        if not self.cfg.model.hs:
            return None
        if not hasattr(self, "_tree"):
            self._tree = huffman_tree(self.counts[FIRST_WORD:].tolist())
        return self._tree

    def sampler(self) -> ExampleSampler:
        if self._sampler is None:
            mcfg, tcfg = self.cfg.model, self.cfg.task
            self._sampler = ExampleSampler(self.counts, sample=tcfg.sample, window=mcfg.window, negative=mcfg.negative,
                                           tree=self.tree(), exponent=tcfg.ns_exponent, first_word=FIRST_WORD)
        return self._sampler

    # --- model ----------------------------------------------------------------
    def build_models(self) -> dict[str, nn.Module]:
        rows = len(self.vocabulary())
        builder = MODELS.get(self.cfg.model.name, families=tuple(self.cfg.task.families))
        return {"model": builder(self.cfg.model, num_words=rows, hs_nodes=rows - FIRST_WORD - 1,
                                 sparse=rows >= SPARSE_FROM)}

    def steps_per_training_step(self, name: str) -> float:
        """One SGD update per chunk: this rank's chunks of a batch."""
        return self.cfg.dataset.batch_size / env_from_os().world_size

    # --- training -------------------------------------------------------------
    def collate(self):
        """Chunks -> their examples (and pair counts), as plain tensors that move to the
        device with the batch. dataset.num_workers=1 builds them in a loader worker while
        this process trains; on a busy two-core machine that was slower (the worker and
        the loop compete), so the default builds them here."""
        return self.examples_batch

    def examples_batch(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The examples of a batch of chunks; with a small vocabulary, only their pair
        counts per chunk (`_pair_counts`): a few hundred kB instead of the examples'
        megabytes, which is what a loader worker then sends and the loop then moves."""
        tokens = torch.stack([sample["tokens"] for sample in samples])
        sentences = torch.stack([sample["sentence"] for sample in samples])
        sampler = self.sampler()
        examples = sampler.cbow(tokens, sentences) if self.cfg.model.name == "cbow" else sampler.skipgram(tokens, sentences)
        batch = {"chunk_count": torch.tensor(len(samples)), "example_count": torch.tensor(len(examples))}
        counts = self._pair_counts(examples, len(samples))
        if counts is None:
            return {**batch, **examples.to_batch()}
        for name, (share, total) in counts.items():
            batch.update({f"{name}.share": share, f"{name}.total": total})
        return batch

    def train_step(self, batch, step):
        losses = []
        for loss in self._chunk_losses(batch, int(batch["chunk_count"])):
            step("main", loss)  # one SGD update per chunk, in corpus order
            losses.append(loss.detach())
        return {"loss": torch.stack(losses).sum() / max(1, int(batch["example_count"]))}

    def _chunk_losses(self, batch, chunks: int):
        """Each chunk's loss, computed when the loop asks for it: after the previous
        chunk's update, with the weights as they are then."""
        names = [key.removesuffix(".share") for key in batch if key.endswith(".share")]
        if names:
            for m in range(chunks):
                yield count_loss(self.model(), {name: (batch[f"{name}.share"][m], batch[f"{name}.total"][m])
                                                for name in names})
            return
        examples = Examples.from_batch(batch)
        bounds = examples.bounds(chunks)
        for m in range(chunks):
            yield self._example_loss(examples.part(bounds[m], bounds[m + 1]))

    def _example_loss(self, part: Examples) -> torch.Tensor:
        targets = {name: t.rows for name, t in part.targets.items()}
        if part.inputs is not None:
            scores = self.model(part.inputs, targets)
        else:
            scores = self.model(part.context, part.offsets, targets)
        return example_loss(scores, part.targets)

    def _pair_counts(self, examples: Examples, chunks: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """Skip-gram's examples as pair counts per chunk and objective, when scoring
        every pair costs less than gathering rows (a small vocabulary); else None."""
        if examples.inputs is None:  # CBOW: a bag of words is no single input row
            return None
        rows = {"negative": len(self.vocab), "hs": len(self.vocab) - FIRST_WORD - 1}
        scored = sum(t.weights.numel() for t in examples.targets.values()) / chunks
        if len(self.vocab) * sum(rows[name] for name in examples.targets) > COUNT_RATIO * scored:
            return None
        return {name: as_targets(pair_counts(examples, name, chunks, len(self.vocab), rows[name]))
                for name in examples.targets}

    # --- evaluation -----------------------------------------------------------
    def eval_batches(self, split: str, env):
        """One batch: the vectors are scored as a whole, the same on every rank."""
        return [split]

    def start_eval(self, split: str) -> None:
        self._scores: dict[str, float] = {}

    def eval_step(self, batch) -> None:
        self._scores = self.score(self.word_vectors())

    def finish_eval(self) -> dict[str, float]:
        if self.run_dir is not None and env_from_os().is_main:
            self.save_files(self.word_vectors(), self.run_dir)
        return self._scores

    def word_vectors(self) -> WordVectors:
        """The input vectors of the words, most frequent first (the special rows left out)."""
        table = self.model.input.detach().float().cpu().numpy()
        return WordVectors(self.vocabulary().itos[FIRST_WORD:], table[FIRST_WORD:])

    def score(self, vectors: WordVectors) -> dict[str, float]:
        """analogy_* on ShapesWorld's analogy set, questions_* on task.questions,
        spearman/pearson on task.pairs (gensim's evaluate_word_analogies and _pairs)."""
        tcfg = self.cfg.task
        restrict = tcfg.restrict_vocab
        scores = _analogy_scores("analogy", evaluate_analogies(vectors, self.shapes_questions(), restrict))
        if tcfg.questions:
            scores.update(_analogy_scores("questions", evaluate_analogies(vectors, read_questions(tcfg.questions),
                                                                          restrict)))
        if tcfg.pairs:
            similarity = evaluate_word_pairs(vectors, tcfg.pairs, restrict_vocab=restrict)
            scores.update(spearman=similarity.spearman, pearson=similarity.pearson, pairs_oov=similarity.oov_ratio)
        return scores

    def shapes_questions(self):
        """The analogy questions ShapesWorld's caption grammar answers (data/shapesworld/analogies.py)."""
        if self._shapes_questions is None:
            with tempfile.TemporaryDirectory() as folder:
                self._shapes_questions = read_questions(write_analogy_questions(Path(folder) / "questions.txt"))
        return self._shapes_questions

    def chosen_words(self) -> list[str]:
        """The words of the neighbour table and the plot: prompt="w1 w2 ..." in mode=predict,
        else task.words, else the task.top_words most frequent."""
        if self.cfg.get("prompt"):
            return [w for w in re.split(r"[\s,]+", self.cfg.prompt.lower()) if w]
        if self.cfg.task.words:
            return [str(w).lower() for w in self.cfg.task.words]
        return self.vocabulary().itos[FIRST_WORD : FIRST_WORD + self.cfg.task.top_words]

    def save_files(self, vectors: WordVectors, folder: Path) -> list[Path]:
        """vectors.txt, vectors.bin and neighbours.md in `folder`."""
        paths = outputs.save_vectors(vectors, folder)
        table = outputs.neighbour_table(vectors, self.chosen_words(), self.cfg.task.neighbours)
        (folder / outputs.NEIGHBOURS).write_text(table)
        return [*paths, folder / outputs.NEIGHBOURS]

    def save_outputs(self, out_dir: Path, tag: str) -> list[Path]:
        path = outputs.plot_projection(self.word_vectors(), self.chosen_words(), out_dir / outputs.PROJECTION,
                                       title=f"{tag}: PCA of the word vectors")
        return [path] if path else []

    # --- prediction -----------------------------------------------------------
    @torch.inference_mode()
    def predict(self, out_dir: Path) -> list[dict[str, Any]]:
        """The chosen words' nearest neighbours; the vector files, the table and the plot
        go to the run folder."""
        vectors, k = self.word_vectors(), self.cfg.task.neighbours
        folder = self.run_dir or out_dir.parent
        self.save_files(vectors, folder)
        outputs.plot_projection(vectors, self.chosen_words(), folder / outputs.PROJECTION)
        records = []
        for word in self.chosen_words():
            if word not in vectors:
                records.append({"input": word, "prediction": "(not in the vocabulary)", "neighbours": []})
                continue
            near = outputs.nearest(vectors, word, k)
            records.append({"input": word, "prediction": " ".join(w for w, _ in near),
                            "neighbours": [[w, round(c, 4)] for w, c in near]})
        return records

    # --- checkpoint state -----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.vocabulary()
        return {"vocab": self.vocab.to_dict(), "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.vocab = Vocabulary.from_dict(state["vocab"])
            self.counts = torch.tensor(state["counts"])


def _analogy_scores(prefix: str, result) -> dict[str, float]:
    return {f"{prefix}_acc": result.accuracy, f"{prefix}_oov": result.oov_ratio}
