"""Detection and instance segmentation: boxes (and masks) from torchvision detectors, scored by COCOeval."""
