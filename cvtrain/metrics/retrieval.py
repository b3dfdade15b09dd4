"""Cross-modal retrieval scores: Recall@K, median and mean rank, both directions.

The COCO retrieval protocol (Karpathy and Fei-Fei; VSE++; CLIP) with several captions
per image: each caption queries the images and is ranked by where its one true image
lands (sentence -> image, t2i); each image queries all captions and is ranked by where
the best of its own captions lands (image -> sentence, i2t). Ranks start at 1; a
candidate scoring exactly as high as the true one does not push it down (ties are
measure-zero for real-valued embeddings, and this keeps the scorer independent of sort
order). Recalls are fractions in [0, 1]; `rsum` is the sum of all six recalls.
"""

from __future__ import annotations

import torch


def text_to_image_ranks(similarity: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """(T,) rank of each caption's true image among all images; similarity is (T, I)."""
    rows = torch.arange(similarity.shape[0], device=similarity.device)
    true = similarity[rows, caption_image].unsqueeze(1)
    return (similarity > true).sum(dim=1) + 1


def image_to_text_ranks(similarity: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """(I,) rank of the best-ranked own caption of each image among all captions."""
    scores = similarity.T  # (I, T)
    own = caption_image.unsqueeze(0) == torch.arange(scores.shape[0], device=scores.device).unsqueeze(1)
    best_own = scores.masked_fill(~own, float("-inf")).max(dim=1, keepdim=True).values
    return (scores > best_own).sum(dim=1) + 1


def rank_scores(ranks: torch.Tensor, ks: tuple[int, ...], prefix: str) -> dict[str, float]:
    """Recall@K for each K, median and mean rank, named `<prefix>_r<K>`, `_medr`, `_meanr`."""
    ranks = ranks.double()
    scores = {f"{prefix}_r{k}": float((ranks <= k).double().mean()) for k in ks}
    scores[f"{prefix}_medr"] = float(ranks.median())  # torch's lower median, as numpy.floor(median) in VSE++
    scores[f"{prefix}_meanr"] = float(ranks.mean())
    return scores


def retrieval_scores(
    similarity: torch.Tensor, caption_image: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Every score of both directions from the (captions, images) similarity matrix and
    the image index of each caption (every image needs at least one caption)."""
    similarity, caption_image = similarity.float(), caption_image.long()
    if (torch.bincount(caption_image, minlength=similarity.shape[1]) == 0).any():
        raise ValueError("retrieval_scores: an image has no caption; every image needs at least one")
    t2i = rank_scores(text_to_image_ranks(similarity, caption_image), ks, "t2i")
    i2t = rank_scores(image_to_text_ranks(similarity, caption_image), ks, "i2t")
    rsum = sum(t2i[f"t2i_r{k}"] + i2t[f"i2t_r{k}"] for k in ks)
    return {**t2i, **i2t, "rsum": rsum}
