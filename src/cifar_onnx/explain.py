"""Where the model looked: occlusion sensitivity with ONNX Runtime alone, drawn over the photo.

Cover one patch of the model's 32x32 input at a time with the image's mean colour and measure
how much the class probability drops: a patch whose loss costs the class much held evidence for
it. Every masked copy goes through the model in one batched call, so this works the same for
every served model (ensembles and in-graph test-time augmentation included), needs no gradients
and no access to the network's inside. Why not a class activation map: docs/MODEL.md, "Explain".
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from cifar_onnx.preprocess import decode_square, to_model_input
from cifar_onnx.registry import ServedModel

PATCH = 8  # a quarter of the input's side: about one object part at CIFAR scale
# A 4x4 grid of non-overlapping patches: 16 masked copies. Half-overlapping patches (stride 4,
# 49 copies) located pasted objects no better (docs/MODEL.md, "Explain") at three times the cost.
STRIDE = 8

# Colour map anchors (position, RGB): dark blue for little evidence through to red for the most.
_ANCHORS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[48, 18, 160], [40, 120, 255], [60, 220, 120], [250, 220, 40], [230, 30, 20]], dtype=np.float64)


@cache
def occlusion_masks(size: int, patch: int = PATCH, stride: int = STRIDE) -> np.ndarray:
    """(M, size, size) booleans: one square patch per mask, on a regular grid over the image."""
    starts = range(0, size - patch + 1, stride)
    masks = np.zeros((len(starts) ** 2, size, size), dtype=bool)
    for i, (top, left) in enumerate((t, s) for t in starts for s in starts):
        masks[i, top : top + patch, left : left + patch] = True
    masks.setflags(write=False)
    return masks


def occlusion_map(
    model: ServedModel, image: np.ndarray, index: int | None, threads: int = 1
) -> tuple[np.ndarray, int, float]:
    """Per-pixel evidence for class `index` (None: the predicted class) in a (S, S, 3) uint8
    image, the class, and its probability on the whole image. Evidence is the mean drop of the
    class probability over the patches that cover the pixel; negative where covering a pixel
    helps the class. `threads` > 1 splits the batch over that many concurrent ORT calls (one
    session serves them all)."""
    masks = occlusion_masks(image.shape[0])
    batch = np.repeat(image[None], len(masks) + 1, axis=0)
    batch[1:][masks] = image.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    chunks = max(1, min(threads, len(batch)))  # never an empty chunk, whatever the setting
    if chunks > 1:
        with ThreadPoolExecutor(chunks) as pool:
            all_probs = np.concatenate(list(pool.map(model.predict, np.array_split(batch, chunks))))
    else:
        all_probs = model.predict(batch)
    index = int(all_probs[0].argmax()) if index is None else index
    probs = all_probs[:, index]
    drops = probs[0] - probs[1:]
    heat = np.tensordot(drops, masks, axes=1) / np.maximum(masks.sum(axis=0), 1)
    return heat.astype(np.float32), index, float(probs[0])


def colourise(heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) evidence -> (H, W, 3) colours and (H, W) opacity: only positive evidence is drawn,
    scaled to the image's own maximum (a map says where, not how much across images)."""
    top = float(heat.max())
    level = np.clip(heat / top, 0.0, 1.0) if top > 0 else np.zeros_like(heat)
    rgb = np.stack([np.interp(level, _ANCHORS, _COLOURS[:, c]) for c in range(3)], axis=-1)
    return rgb, 0.15 + 0.5 * level


def smooth(heat: np.ndarray, width: int = PATCH) -> np.ndarray:
    """A triangle filter `2 * width - 1` wide along each axis (edges repeated): for the display
    only, so that the grid's patches blend into a map instead of hard-edged squares."""
    kernel = np.concatenate([np.arange(1, width + 1), np.arange(width - 1, 0, -1)]).astype(np.float64)
    kernel /= kernel.sum()
    out = heat.astype(np.float64)
    for axis in (0, 1):
        padded = np.pad(out, [(width - 1, width - 1) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        out = np.apply_along_axis(np.convolve, axis, padded, kernel, mode="valid")
    return out


def overlay_png(square: Image.Image, heat: np.ndarray, size: int) -> bytes:
    """The photo's centre square at `size` x `size` with the evidence map over it, as PNG."""
    photo = np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    big = np.asarray(
        Image.fromarray(smooth(heat).astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
    )
    rgb, alpha = colourise(big)
    blended = photo * (1 - alpha[..., None]) + rgb * alpha[..., None]
    buffer = io.BytesIO()
    # zlib level 1: several times faster than the default level for a somewhat larger file
    # (docs/MODEL.md, "Calibration, unsure and explanations", has the measured cost).
    Image.fromarray(blended.round().astype(np.uint8)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@dataclass(frozen=True)
class Explanation:
    png: bytes
    label: str  # the class explained
    index: int
    probability: float  # its calibrated probability on the whole image


def explain_bytes(
    data: bytes, model: ServedModel, index: int | None, size: int, max_pixels: int, threads: int = 1
) -> Explanation:
    """Decode an upload and explain class `index` (None: the predicted class), with `threads`
    concurrent ONNX Runtime calls (the inference workers the caller holds for it)."""
    square = decode_square(data, max_pixels, min_side=max(size, model.image_size))
    heat, index, probability = occlusion_map(model, to_model_input(square, model.image_size), index, threads)
    return Explanation(overlay_png(square, heat, size), model.classes[index], index, probability)
