"""Semantic-segmentation data sets: an image and a class index per pixel (255: ignored)."""
