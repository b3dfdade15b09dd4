"""Semantic segmentation: label every pixel with an encoder-decoder; pixel accuracy and IoU."""
