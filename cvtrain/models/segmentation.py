"""Segmentation models: the course U-Net and encoder-decoder, torchvision FCN and DeepLabV3."""
