"""Which images of the clean hold-out a served file never trained on, and its accuracy on them.

Runs since the hold-out existed record their layout (training.data): every one of the 2,000 is
held out. Files trained before it saw most of them; only those that fell in their 5,000-image
validation split count, and the metadata says how many.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from training.data import Cifar10


def held_out_rows(meta: dict[str, Any], data: Cifar10) -> np.ndarray:
    """Rows of the 50,000 training images that no member of this served file trained on."""
    assert data.lossless is not None and data.val_rows is not None
    held = None
    for member in meta.get("members", [{}]):
        layout = member.get("layout")  # absent: trained before the clean hold-out existed
        if layout == "full":
            rows = data.lossless.rows
        elif layout == "split":
            rows = np.union1d(data.val_rows, data.lossless.rows)
        else:
            rows = data.val_rows
        held = rows if held is None else np.intersect1d(held, rows)
    return np.asarray(held)


def clean_positions(meta: dict[str, Any], data: Cifar10) -> np.ndarray:
    """Positions in the clean hold-out of the images this file never trained on."""
    assert data.lossless is not None
    return np.flatnonzero(np.isin(data.lossless.rows, held_out_rows(meta, data)))


def lossless_fields(probs_clean: np.ndarray, probs_jpeg: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The metadata's accuracy fields for the clean hold-out: the lossless pixels, and the same
    images as the JPEG copy has them (the pair shows what JPEG costs this model)."""
    return {
        "lossless_val_int8": round(100 * float((probs_clean.argmax(1) == labels).mean()), 2),
        "lossless_val_jpeg_copies_int8": round(100 * float((probs_jpeg.argmax(1) == labels).mean()), 2),
    }


def measure_lossless(probs: Callable[[np.ndarray], np.ndarray], data: Cifar10, positions: np.ndarray) -> dict[str, Any]:
    """`lossless_fields` of a model (`probs`: images -> probabilities) on the given positions of the
    clean hold-out, with their count; printed, since every export and ensemble reports it."""
    assert data.lossless is not None
    labels = data.lossless.clean.labels[positions]
    fields = lossless_fields(
        probs(data.lossless.clean.images[positions]), probs(data.lossless.jpeg.images[positions]), labels
    )
    fields["images_lossless_val"] = len(positions)
    print(f"int8 on the clean hold-out ({len(positions)} images): {fields['lossless_val_int8']:.2f}%; the same "
          f"images as JPEG copies: {fields['lossless_val_jpeg_copies_int8']:.2f}%", flush=True)  # fmt: skip
    return fields
