"""Batched tensor transforms: normalisation, pixel permutations and augmentations.

Every transform takes a whole float batch (B x C x H x W) and draws its randomness per image
from an explicit generator, so a run's seed fixes it and "fixed" vs "fresh" is a setting.
"""

from __future__ import annotations

from typing import Callable

import torch

from ablate.errors import UsageError, unknown_name

Batch = torch.Tensor
Augmentation = Callable[[Batch, torch.Generator], Batch]


# ---------------------------------------------------------------- normalisation


def normalizer(kind: str, train_x: torch.Tensor) -> Callable[[torch.Tensor], Batch]:
    """uint8 batch -> float batch. Statistics come from the train split only."""
    channels = train_x.shape[1]
    if kind == "none":  # [0, 1]
        mean, std = torch.zeros(channels), torch.ones(channels)
    elif kind == "half":  # [-1, 1], the PyTorch tutorial's Normalize((0.5,) * 3, (0.5,) * 3)
        mean, std = torch.full((channels,), 0.5), torch.full((channels,), 0.5)
    elif kind == "standard":  # per-channel mean and std of the train split
        pixels = train_x.transpose(0, 1).reshape(channels, -1).double() / 255
        mean, std = pixels.mean(1).float(), pixels.std(1).float()
    else:
        raise unknown_name("normalization", kind, list(NORMALIZATIONS))
    scale = (1 / (255 * std)).view(1, -1, 1, 1).to(train_x.device)
    shift = (-mean / std).view(1, -1, 1, 1).to(train_x.device)
    return lambda x: x.float() * scale + shift


NORMALIZATIONS = ("none", "half", "standard")


# ---------------------------------------------------------------- pixel permutations


def permutation(kind: str, pixels: int, gen: torch.Generator) -> Callable[[Batch], Batch]:
    """Shuffle the H*W pixel positions (every channel alike): none, fixed (one permutation
    drawn from the run seed for every image) or fresh (a new one per image per call)."""
    if kind == "none":
        return lambda x: x
    if kind == "fixed":
        perm = torch.randperm(pixels, generator=gen)

        def fixed(x):
            return x.flatten(2)[:, :, perm.to(x.device)].view_as(x)

        return fixed
    if kind == "fresh":

        def fresh(x):
            b, c = x.shape[:2]
            perms = torch.stack([torch.randperm(pixels, generator=gen) for _ in range(b)])
            index = perms.to(x.device).unsqueeze(1).expand(b, c, pixels)
            return x.flatten(2).gather(2, index).view_as(x)

        return fresh
    raise unknown_name("permutation", kind, list(PERMUTATIONS))


PERMUTATIONS = ("none", "fixed", "fresh")


# ---------------------------------------------------------------- augmentations


def _uniform(gen, n, low, high, device):
    return (torch.rand(n, generator=gen) * (high - low) + low).to(device)


def flip(x: Batch, gen: torch.Generator) -> Batch:
    """Horizontal flip of a random half of the images."""
    mask = (torch.rand(len(x), generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


def crop(x: Batch, gen: torch.Generator, pad: int = 4) -> Batch:
    """A random crop per image from the image zero-padded by `pad` on every side."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, cols)


AUGMENTATIONS: dict[str, Augmentation] = {
    "flip": flip,
    "crop": crop,
    "crop-flip": lambda x, gen: flip(crop(x, gen), gen),
}


def augmentation(name: str) -> Augmentation | None:
    """The augmentation named `name`, or a chain written `a+b`; None for "none"."""
    if name == "none":
        return None
    parts = name.split("+")
    for part in parts:
        if part not in AUGMENTATIONS:
            raise unknown_name("augmentation", part, ["none", *AUGMENTATIONS])
    functions = [AUGMENTATIONS[p] for p in parts]

    def chain(x, gen):
        for f in functions:
            x = f(x, gen)
        return x

    return chain


def check_names(kind: str, names: list[str], allowed) -> None:
    for name in names:
        if name not in allowed:
            raise unknown_name(kind, name, list(allowed))
    if not names:
        raise UsageError(f"give at least one {kind}")
