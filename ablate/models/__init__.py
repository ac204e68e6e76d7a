"""Pretrained weights for the models ablate trains: torchvision's or a file, the head fresh."""
