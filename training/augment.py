"""Augmentation, per batch on float tensors (N, 3, S, S) in 0..1: cheap on the CPU, no data workers.

The recipe's keys, in the order they are applied:
- `flip`: "random" or "alternating" (airbench: each image mirrored every other epoch).
- `crop_scale` (0: off): random-resized crops covering `crop_scale`..1 of the image, aspect 3/4..4/3,
  scaled back to full size. Photos are framed differently from CIFAR's centred objects; replaces
  `translate` when on.
- `translate`: shifts of up to that many pixels from the reflect-padded image.
- `colour` (0: off): brightness, contrast and saturation each scaled by 1 +- `colour`. Cameras and
  displays differ in exposure and white balance; CIFAR's photos are one set of them.
- `blur` (0: off): each image blurred or sharpened by a random amount up to `blur` (a 3x3 binomial
  kernel, mixed in or subtracted). A photo shrunk to 32 px is sharper than CIFAR's images, a JPEG
  softer.
- `cutout`: one square of that side zeroed (DeVries & Taylor 2017).
- `cutmix` (0: off), applied by the training loop after `augment` because it changes the labels: with
  that probability per batch, each image gets a box pasted from another image of the batch and is
  learned as both classes, weighted by area (Yun et al. 2019). It teaches the network to use the
  whole image, not the one patch that is most CIFAR-like.

An option that is off draws no random numbers, so recipes without it (and runs resumed from older
checkpoints) get exactly the batches they always got.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded batch: each image shifted by up to `pad` pixels."""
    if pad == 0:
        return x
    n, size = len(x), x.shape[-1]
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    shifts = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    out = torch.empty_like(x)
    for dy in range(2 * pad + 1):  # one slice per distinct shift: (2*pad+1)^2 vector copies
        for dx in range(2 * pad + 1):
            rows = ((shifts[0] == dy) & (shifts[1] == dx)).nonzero().flatten()
            if len(rows):
                out[rows] = padded[rows, :, dy : dy + size, dx : dx + size]
    return out


def random_resized_crop(x: torch.Tensor, min_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Each image: a box of area min_scale..1 and aspect 3/4..4/3 at a random place inside it,
    resampled (bilinear) to the full size, as one batched affine sampling."""
    n = len(x)
    area = min_scale + (1 - min_scale) * torch.rand(n, generator=gen)
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(n, generator=gen)
    ratio = log_ratio.exp()
    width, height = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    # Centres where the whole box stays inside the image (normalised coordinates, -1..1).
    cx = (1 - width) * (2 * torch.rand(n, generator=gen) - 1)
    cy = (1 - height) * (2 * torch.rand(n, generator=gen) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, cx, height, cy
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor drawn from 1 +- strength per image."""
    if strength == 0:
        return x
    n = len(x)
    factors = 1 + strength * (2 * torch.rand(3, n, 1, 1, 1, generator=gen) - 1)
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).to(x.dtype)
    x = x * factors[0]
    mean = grey.mean(dim=(1, 2, 3), keepdim=True) * factors[0]
    x = mean + (x - mean) * factors[1]
    x = grey * factors[0] + (x - grey * factors[0]) * factors[2]
    return x.clamp(0, 1)


def blur_or_sharpen(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """x + a * (blur(x) - x) with a drawn from -strength..strength: a > 0 softens, a < 0 sharpens
    (unsharp masking), with a 3x3 binomial kernel per channel."""
    if strength == 0:
        return x
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=x.shape[1])
    amount = strength * (2 * torch.rand(len(x), 1, 1, 1, generator=gen) - 1)
    return (x + amount.to(x.dtype) * (blurred - x)).clamp(0, 1)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one random size x size square per image (DeVries & Taylor 2017)."""
    if size == 0:
        return x
    n, full = len(x), x.shape[-1]
    centre = torch.randint(0, full, (2, n), generator=gen)
    grid = torch.arange(full)
    rows = (grid[None] - centre[0][:, None]).abs() <= size // 2
    cols = (grid[None] - centre[1][:, None]).abs() <= size // 2
    keep = ~(rows[:, :, None] & cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def cutmix(x: torch.Tensor, p: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """With probability p, one box (area 1 - lam, lam uniform, clipped at the edges) pasted into
    every image from its partner in a random pairing of the batch. Returns the images, the
    partners (None when not applied) and the share of each image that is still its own."""
    if p == 0 or torch.rand(1, generator=gen).item() >= p:
        return x, None, 1.0
    size = x.shape[-1]
    partner = torch.randperm(len(x), generator=gen)
    side = round(size * math.sqrt(1 - torch.rand(1, generator=gen).item()))
    cy, cx = torch.randint(0, size, (2,), generator=gen).tolist()
    top, left = max(cy - side // 2, 0), max(cx - side // 2, 0)
    bottom, right = min(cy - side // 2 + side, size), min(cx - side // 2 + side, size)
    out = x.clone()
    out[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
    return out, partner, 1 - (bottom - top) * (right - left) / size**2


@functools.lru_cache(maxsize=2)
def _first_flips(seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 2, 1 << 20, dtype=np.int64))


def flip_mask(indices: torch.Tensor, epoch: int, mode: str, seed: int, gen: torch.Generator) -> torch.Tensor:
    """Which images of the batch to mirror. 'alternating' (airbench): each image is mirrored on
    every other epoch, from a random first choice, so every two epochs see both versions once,
    a lower-variance form of random flipping."""
    if mode == "alternating":
        return (_first_flips(seed)[indices] ^ (epoch % 2)).bool()
    return torch.rand(len(indices), generator=gen) < 0.5


def augment(
    x: torch.Tensor, indices: torch.Tensor, epoch: int, recipe: dict, seed: int, gen: torch.Generator
) -> torch.Tensor:
    mirror = flip_mask(indices, epoch, recipe["flip"], seed, gen)
    x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    if recipe.get("crop_scale", 0):
        x = random_resized_crop(x, recipe["crop_scale"], gen)
    else:
        x = random_translate(x, recipe["translate"], gen)
    x = blur_or_sharpen(colour_jitter(x, recipe.get("colour", 0), gen), recipe.get("blur", 0), gen)
    return cutout(x, recipe["cutout"], gen)
