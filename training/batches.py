"""Arrays to the tensors every registered model takes, and random draws of training images: a
leaf that the training loop, warm starts and fine-tuning all import (none of them imports another)."""

from __future__ import annotations

import numpy as np
import torch


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in 0..1 (the input every registered model takes)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=torch.channels_last)


def random_images(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` images drawn at random: the arrays are sorted by class (an image folder), so the
    first N would be airplanes alone, and statistics fitted on them (whitening, BatchNorm) skewed."""
    return images[np.random.default_rng(seed).permutation(len(images))[:count]]
