"""Detectors: torchvision Faster R-CNN, RetinaNet, FCOS, SSD and Mask R-CNN with configurable backbones."""
