"""Caption scores exactly as the COCO caption evaluation (pycocoevalcap) computes them, faster.

BLEU-1..4, METEOR 1.5 (through its jar), ROUGE-L and CIDEr-D, after the same PTB
tokenization, so the numbers are comparable with published results.
"""

from __future__ import annotations

from cvtrain.metrics.captioning.score import load_coco_files, score_captions
from cvtrain.metrics.captioning.tokenize import ptb_tokenize

__all__ = ["load_coco_files", "ptb_tokenize", "score_captions"]
