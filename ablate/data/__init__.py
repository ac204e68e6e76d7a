"""Datasets: the registry, the built-in ones and image folders, in memory as uint8 tensors."""
