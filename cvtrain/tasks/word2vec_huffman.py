"""The Huffman tree of hierarchical softmax, built as word2vec.c's CreateBinaryTree builds it.

Each word is a leaf; predicting it is a walk from the root through inner nodes, one
binary decision per node. Frequent words get short paths, so a step costs about
log2(V) node scores instead of V. word2vec.c merges the two smallest counts with two
pointers over the counts sorted in decreasing order (no heap), which fixes how ties
break; the same loop here gives the same codes and nodes, so vectors trained with
model.hs=true mean the same as the C tool's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

FAR = 10**15  # word2vec.c's count of not-yet-made inner nodes


@dataclass
class HuffmanTree:
    """Per word, its path padded to the longest: `points` (V, L) inner-node rows from the
    root down, `codes` (V, L) the branch taken at each (0/1), `lengths` (V,)."""

    points: torch.Tensor
    codes: torch.Tensor
    lengths: torch.Tensor

    @property
    def inner_nodes(self) -> int:
        return len(self.lengths) - 1


def huffman_tree(counts: Sequence[int]) -> HuffmanTree:
    """The tree of words counted `counts`, which must be in decreasing order (a word2vec
    vocabulary's order); at least two words."""
    size = len(counts)
    if size < 2:
        raise ValueError("a Huffman tree needs at least two words")
    if any(a < b for a, b in zip(counts, counts[1:])):
        raise ValueError("counts must be in decreasing order")
    parent, binary = _merge(list(counts))
    paths = [_path(word, size, parent, binary) for word in range(size)]
    longest = max(len(codes) for codes, _ in paths)
    points = torch.zeros(size, longest, dtype=torch.long)
    codes = torch.zeros(size, longest, dtype=torch.long)
    for word, (word_codes, word_points) in enumerate(paths):
        codes[word, : len(word_codes)] = torch.tensor(word_codes)
        points[word, : len(word_points)] = torch.tensor(word_points)
    return HuffmanTree(points, codes, torch.tensor([len(c) for c, _ in paths]))


def _merge(counts: list[int]) -> tuple[list[int], list[int]]:
    """word2vec.c's merge loop: the parent of every node and its branch bit (1 for the
    second-smallest of each merge)."""
    size = len(counts)
    count = counts + [FAR] * (size - 1)
    parent, binary = [0] * (2 * size - 1), [0] * (2 * size - 1)
    low, high = size - 1, size  # the smallest leaf not yet merged; the smallest inner node
    for a in range(size - 1):
        smallest = []
        for _ in range(2):
            if low >= 0 and count[low] < count[high]:
                smallest.append(low)
                low -= 1
            else:
                smallest.append(high)
                high += 1
        count[size + a] = count[smallest[0]] + count[smallest[1]]
        parent[smallest[0]] = parent[smallest[1]] = size + a
        binary[smallest[1]] = 1
    return parent, binary


def _path(word: int, size: int, parent: list[int], binary: list[int]) -> tuple[list[int], list[int]]:
    """(codes, inner-node rows) from the root to `word`, as word2vec.c stores them."""
    codes, nodes, node = [], [], word
    while node != 2 * size - 2:
        codes.append(binary[node])
        node = parent[node]
        nodes.append(node - size)
    return codes[::-1], nodes[::-1]
