"""Batched tensor transforms: normalisation, pixel permutations and augmentations.

Every transform takes a whole float batch (B x C x H x W) and draws its randomness per image
from an explicit generator, so a run's seed fixes it and "fixed" vs "fresh" is a setting.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ablate.config import augmentation_parts
from ablate.registry import Registry

Batch = torch.Tensor
Augmentation = Callable[[Batch, torch.Generator], Batch]

NORMALIZATIONS: Registry[Callable[[torch.Tensor], Callable[[Batch], Batch]]] = Registry("normalization")
PERMUTATIONS: Registry[Callable[[int, torch.Generator], Callable[[Batch], Batch]]] = Registry("permutation")
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


# ---------------------------------------------------------------- normalisation


def _affine(mean: torch.Tensor, std: torch.Tensor, device) -> Callable[[Batch], Batch]:
    mean, std = mean.view(1, -1, 1, 1).to(device), std.view(1, -1, 1, 1).to(device)
    return lambda x: (x - mean) / std


@NORMALIZATIONS.register("none")
def no_normalization(train: torch.Tensor) -> Callable[[Batch], Batch]:
    """pixels in [0, 1], as they are"""
    channels = train.shape[1]
    return _affine(torch.zeros(channels), torch.ones(channels), train.device)


@NORMALIZATIONS.register("half")
def half(train: torch.Tensor) -> Callable[[Batch], Batch]:
    """[-1, 1]: the PyTorch tutorial's Normalize(0.5, 0.5)"""
    channels = train.shape[1]
    return _affine(torch.full((channels,), 0.5), torch.full((channels,), 0.5), train.device)


@NORMALIZATIONS.register("standard")
def standard(train: torch.Tensor) -> Callable[[Batch], Batch]:
    """per-channel mean and std of the train split"""
    channels = train.shape[1]
    pixels = train.transpose(0, 1).reshape(channels, -1).double() / 255
    return _affine(pixels.mean(1).float(), pixels.std(1).float(), train.device)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@NORMALIZATIONS.register("imagenet")
def imagenet(train: torch.Tensor) -> Callable[[Batch], Batch]:
    """ImageNet's mean and std, as torchvision's pretrained weights expect (1 channel: their means)"""
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    if train.shape[1] != 3:  # a gray image, repeated to 3 channels by the model: one value for all
        mean, std = mean.mean().expand(train.shape[1]), std.mean().expand(train.shape[1])
    return _affine(mean, std, train.device)


@NORMALIZATIONS.register("zca")
def zca(train: torch.Tensor, epsilon: float = 1e-2, fit_images: int = 10_000) -> Callable[[Batch], Batch]:
    """ZCA whitening fitted on the train split: decorrelated pixels of unit variance"""
    # fitted on a fixed subset of up to `fit_images`: the D x D covariance of all 50,000
    # CIFAR images costs 20 times more for the same matrix
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:fit_images]
    x = train[subset.to(train.device)].flatten(1).double() / 255
    mean = x.mean(0)
    x = x - mean
    values, vectors = torch.linalg.eigh(x.T @ x / len(x))
    whiten = (vectors * (values.clamp(min=0) + epsilon).rsqrt()) @ vectors.T
    mean, whiten = mean.float(), whiten.float()
    return lambda batch: ((batch.flatten(1) - mean) @ whiten).view_as(batch)


def normalizer(kind: str, train: torch.Tensor) -> Callable[[Batch], Batch]:
    """A function on float batches in [0, 1], fitted on the train split (uint8) only."""
    return NORMALIZATIONS.get(kind)(train)


# ---------------------------------------------------------------- pixel permutations


@PERMUTATIONS.register("none")
def no_permutation(pixels: int, gen: torch.Generator) -> Callable[[Batch], Batch]:
    """the images as they are"""
    return lambda x: x


@PERMUTATIONS.register("fixed")
def fixed_permutation(pixels: int, gen: torch.Generator) -> Callable[[Batch], Batch]:
    """one permutation, drawn from the run's seed, for every image, train and test"""
    perm = torch.randperm(pixels, generator=gen)
    return lambda x: x.flatten(2)[:, :, perm.to(x.device)].view_as(x)


@PERMUTATIONS.register("fresh")
def fresh_permutation(pixels: int, gen: torch.Generator) -> Callable[[Batch], Batch]:
    """a new permutation for every image, every time it is seen"""

    def fresh(x):
        b, c = x.shape[:2]
        perms = torch.stack([torch.randperm(pixels, generator=gen) for _ in range(b)])
        index = perms.to(x.device).unsqueeze(1).expand(b, c, pixels)
        return x.flatten(2).gather(2, index).view_as(x)

    return fresh


def permutation(kind: str, pixels: int, gen: torch.Generator) -> Callable[[Batch], Batch]:
    """Shuffle the H*W pixel positions (every channel alike), drawing from `gen`."""
    return PERMUTATIONS.get(kind)(pixels, gen)


# ---------------------------------------------------------------- augmentations
# On float batches in [0, 1], before normalisation; per-image randomness from `gen`.


def _uniform(gen: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * (high - low) + low).to(device)


def _coin(gen: torch.Generator, n: int, device, p: float = 0.5) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p).to(device).view(-1, 1, 1, 1)


@AUGMENTATIONS.register("flip")
def flip(x: Batch, gen: torch.Generator) -> Batch:
    """Horizontal flip of a random half of the images."""
    return torch.where(_coin(gen, len(x), x.device), x.flip(3), x)


@AUGMENTATIONS.register("vflip")
def vflip(x: Batch, gen: torch.Generator) -> Batch:
    """Vertical flip of a random half of the images."""
    return torch.where(_coin(gen, len(x), x.device), x.flip(2), x)


@AUGMENTATIONS.register("crop")
def crop(x: Batch, gen: torch.Generator, pad: int = 4) -> Batch:
    """A random crop per image from the image zero-padded by `pad` on every side."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, cols)


@AUGMENTATIONS.register("crop-flip")
def crop_flip(x: Batch, gen: torch.Generator) -> Batch:
    """A random crop (padding 4), then a horizontal flip of a random half."""
    return flip(crop(x, gen), gen)


@AUGMENTATIONS.register("color-jitter")
def color_jitter(x: Batch, gen: torch.Generator, strength: float = 0.4, hue: float = 0.1) -> Batch:
    """Brightness, contrast and saturation factors in [1 - strength, 1 + strength] and a hue
    turn of up to `hue` of a circle (a rotation of the YIQ chroma plane), per image."""
    b, device = len(x), x.device
    factor = lambda: _uniform(gen, b, 1 - strength, 1 + strength, device).view(b, 1, 1, 1)  # noqa: E731
    x = (x * factor()).clamp(0, 1)
    gray = x.mean(1, keepdim=True) if x.shape[1] == 1 else _luma(x)
    mean = gray.mean((2, 3), keepdim=True)
    x = ((x - mean) * factor() + mean).clamp(0, 1)
    if x.shape[1] == 3:
        x = ((x - _luma(x)) * factor() + _luma(x)).clamp(0, 1)
        angle = _uniform(gen, b, -hue, hue, device) * 2 * torch.pi
        x = _rotate_hue(x, angle).clamp(0, 1)
    return x


def _luma(x: Batch) -> Batch:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rotate_hue(x: Batch, angle: torch.Tensor) -> Batch:
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(x), 3, 3, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    to_yiq = _TO_YIQ.to(x.device)
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # B x 3 x 3, applied to each pixel
    return torch.einsum("bij,bjhw->bihw", matrix, x)


def _warp(x: Batch, theta: torch.Tensor) -> Batch:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _affine_matrices(gen, b, device, degrees, translate=0.0, scale=(1.0, 1.0), shear=0.0):
    angle = _uniform(gen, b, -degrees, degrees, device) * torch.pi / 180
    shift = _uniform(gen, 2 * b, -2 * translate, 2 * translate, device).view(b, 2)  # grid units: 2 = width
    zoom = _uniform(gen, b, *scale, device)
    skew = _uniform(gen, b, -shear, shear, device) * torch.pi / 180
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos / zoom, (-sin + torch.tan(skew) * cos) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = sin / zoom, cos / zoom
    theta[:, :, 2] = shift
    return theta


@AUGMENTATIONS.register("rotation")
def rotation(x: Batch, gen: torch.Generator, degrees: float = 15) -> Batch:
    """A random rotation per image, up to `degrees` either way."""
    return _warp(x, _affine_matrices(gen, len(x), x.device, degrees))


@AUGMENTATIONS.register("affine")
def affine(x: Batch, gen: torch.Generator) -> Batch:
    """Per image: rotation up to 15 degrees, shift up to 10 %, scale 0.9-1.1, shear up to 10 degrees."""
    return _warp(x, _affine_matrices(gen, len(x), x.device, 15, 0.1, (0.9, 1.1), 10))


@AUGMENTATIONS.register("perspective")
def perspective(x: Batch, gen: torch.Generator, distortion: float = 0.5, p: float = 0.5) -> Batch:
    """With probability p per image, move each corner inwards by up to `distortion` / 2 of the
    size (torchvision's RandomPerspective) and warp the image by that homography."""
    b, device = len(x), x.device
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
    moved = corners - corners.sign() * _uniform(gen, b * 8, 0, distortion, device).view(b, 4, 2)
    keep = ~_coin(gen, b, device, p).view(b, 1, 1)
    moved = torch.where(keep, corners, moved)
    # grid_sample needs, per output pixel, where to read: the homography taking the moved
    # corners (where the image corners land) back to the image corners; solve A h = rhs
    ox, oy = moved[..., 0], moved[..., 1]
    ix, iy = corners[:, 0].expand(b, 4), corners[:, 1].expand(b, 4)
    zero, one = torch.zeros_like(ox), torch.ones_like(ox)
    rows_x = torch.stack([ox, oy, one, zero, zero, zero, -ox * ix, -oy * ix], -1)
    rows_y = torch.stack([zero, zero, zero, ox, oy, one, -ox * iy, -oy * iy], -1)
    h = torch.linalg.solve(torch.cat([rows_x, rows_y], 1), torch.cat([ix, iy], 1))
    h = torch.cat([h, torch.ones(b, 1, device=device)], 1).view(b, 3, 3)
    height, width = x.shape[2:]
    ys = (torch.arange(height, device=device) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device) * 2 + 1) / width - 1
    grid = torch.stack([xs.expand(height, width), ys.view(-1, 1).expand(height, width),
                        torch.ones(height, width, device=device)], -1)
    mapped = torch.einsum("bij,hwj->bhwi", h, grid)
    return F.grid_sample(x, mapped[..., :2] / mapped[..., 2:], align_corners=False)


@AUGMENTATIONS.register("blur")
def blur(x: Batch, gen: torch.Generator, kernel: int = 3, sigma=(0.1, 2.0)) -> Batch:
    """Gaussian blur with a random sigma per image (torchvision's GaussianBlur(3, (0.1, 2)))."""
    b, c, h, w = x.shape
    s = _uniform(gen, b, *sigma, x.device).view(b, 1)
    offsets = torch.arange(kernel, device=x.device) - kernel // 2
    weights = torch.exp(-(offsets ** 2) / (2 * s ** 2))
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (b*c) x k
    planes = F.pad(x.reshape(1, b * c, h, w), [kernel // 2] * 4, mode="reflect")
    planes = F.conv2d(planes, weights.view(b * c, 1, kernel, 1), groups=b * c)
    planes = F.conv2d(planes, weights.view(b * c, 1, 1, kernel), groups=b * c)
    return planes.view(b, c, h, w)


def augmentation(name: str) -> Augmentation | None:
    """The augmentation named `name`, or a chain written `a+b`; None for "none"."""
    functions = [AUGMENTATIONS.get(part) for part in augmentation_parts(name, AUGMENTATIONS)]
    if not functions:
        return None

    def chain(x, gen):
        for f in functions:
            x = f(x, gen)
        return x

    return chain

