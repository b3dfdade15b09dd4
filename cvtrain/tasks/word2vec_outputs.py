"""What a word2vec run leaves for people and other tools: the vectors in both word2vec
formats (gensim's KeyedVectors.load_word2vec_format reads them), a nearest-neighbour
table in Markdown, and a 2-D PCA projection of chosen words as a PNG.

numpy and matplotlib only: the vectors arrive as the scorers' `WordVectors`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvtrain.metrics.embeddings import WordVectors, write_word2vec

VECTORS_TEXT, VECTORS_BINARY = "vectors.txt", "vectors.bin"
NEIGHBOURS, PROJECTION = "neighbours.md", "projection.png"


def save_vectors(vectors: WordVectors, folder: Path) -> list[Path]:
    """vectors.txt and vectors.bin in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / VECTORS_TEXT, folder / VECTORS_BINARY]
    write_word2vec(vectors, paths[0], binary=False)
    write_word2vec(vectors, paths[1], binary=True)
    return paths


def nearest(vectors: WordVectors, word: str, k: int) -> list[tuple[str, float]]:
    """The k words of largest cosine with `word`, best first, the word itself left out."""
    unit = _unit_rows(vectors.vectors)
    cosines = unit @ unit[vectors.index[word]]
    cosines[vectors.index[word]] = -np.inf
    best = np.argsort(-cosines, kind="stable")[:k]
    return [(vectors.words[row], float(cosines[row])) for row in best]


def neighbour_table(vectors: WordVectors, words: list[str], k: int) -> str:
    """A Markdown table: each known word, then its k nearest neighbours with cosines;
    unknown words are listed under the table."""
    known = [word for word in words if word in vectors]
    lines = ["| word | " + " | ".join(str(i) for i in range(1, k + 1)) + " |", "|---" * (k + 1) + "|"]
    for word in known:
        cells = [f"{other} ({cosine:.2f})" for other, cosine in nearest(vectors, word, k)]
        lines.append(f"| {word} | " + " | ".join(cells) + " |")
    unknown = [word for word in words if word not in vectors]
    if unknown:
        lines += ["", f"Not in the vocabulary: {', '.join(unknown)}."]
    return "\n".join(lines) + "\n"


def projection(vectors: WordVectors, words: list[str]) -> np.ndarray:
    """(n, 2) coordinates of the known `words` on the first two principal axes of their
    vectors (centred; SVD), so the plot shows how those words spread."""
    matrix = np.stack([vectors[word] for word in words]).astype(np.float64)
    centred = matrix - matrix.mean(0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ axes[:2].T
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))  # one word: a single axis


def plot_projection(vectors: WordVectors, words: list[str], path: Path, title: str = "") -> Path | None:
    """The PCA projection of the known `words`, each point labelled; None for fewer than two."""
    known = [word for word in words if word in vectors]
    if len(known) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords = projection(vectors, known)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(coords[:, 0], coords[:, 1], s=12)
    for word, (x, y) in zip(known, coords):
        ax.annotate(word, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.set_title(title or f"{len(known)} words, PCA of their vectors", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)
