"""Bytes in, predictions out: the one code path behind the JSON API, the page and the CLI."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Histogram

from cifar_onnx.preprocess import ImageError, decode_image
from cifar_onnx.registry import ServedModel
from cifar_onnx.trust import evidence, unsure_reason

INFERENCE_SECONDS = Histogram(
    "cifar_onnx_inference_seconds",
    "Time of one ONNX Runtime call (decode excluded), by model and batch size bucket.",
    ["model", "batch"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0),
)
BATCH_IMAGES = Histogram(
    "cifar_onnx_batch_images",
    "Images in one ONNX Runtime call (dynamic batching joins waiting requests), by model.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


@dataclass(frozen=True)
class ClassScore:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    top_k: list[ClassScore]
    model: str
    inference_ms: float
    unsure: bool  # the evidence spread is under the model's threshold (cifar_onnx.trust)
    unsure_reason: str | None  # why, for people; null when not unsure


def _batch_bucket(n: int) -> str:
    return "1" if n == 1 else "2-8" if n <= 8 else "9-64" if n <= 64 else ">64"


def timed_predict(model: ServedModel, images: np.ndarray, lone: bool = False) -> tuple[np.ndarray, float]:
    """One ONNX Runtime call on (N, S, S, 3) uint8 images: calibrated probabilities and seconds."""
    start = time.perf_counter()
    probs = model.predict(images, lone)
    seconds = time.perf_counter() - start
    INFERENCE_SECONDS.labels(model.name, _batch_bucket(len(images))).observe(seconds)
    BATCH_IMAGES.labels(model.name).observe(len(images))
    return probs, seconds


def predictions(model: ServedModel, probs: np.ndarray, seconds: float, top_k: int) -> list[Prediction]:
    """Calibrated probabilities -> a Prediction per row, with its top_k classes."""
    k = max(1, min(top_k, len(model.classes)))
    results = []
    for row, score in zip(probs, evidence(probs), strict=False):
        order = np.argsort(-row, kind="stable")[:k]
        scores = [ClassScore(model.classes[i], int(i), round(float(row[i]), 6)) for i in order]
        best = scores[0]
        reason = unsure_reason(float(score), model.unsure_threshold)
        results.append(Prediction(best.label, best.index, best.probability, scores, model.name, round(seconds * 1000, 3),
                                  reason is not None, reason))  # fmt: skip
    return results


def decode_each(files: Sequence[tuple[str | None, bytes]], size: int, max_pixels: int) -> list[np.ndarray | ImageError]:
    """Decode every file on its own: its (size, size, 3) array, or the ImageError (naming the
    file) that refused it, so that one bad file does not sink the others."""
    out: list[np.ndarray | ImageError] = []
    for name, data in files:
        try:
            out.append(decode_image(data, size, max_pixels))
        except ImageError as exc:
            out.append(type(exc)(f"{name}: {exc}") if name else exc)
    return out


def decode_batch(files: Sequence[tuple[str | None, bytes]], size: int, max_pixels: int) -> np.ndarray:
    """Decode (filename, bytes) pairs to (N, size, size, 3); the first refusal is raised, naming its file."""
    decoded = decode_each(files, size, max_pixels)
    refused = next((d for d in decoded if isinstance(d, ImageError)), None)
    if refused is not None:
        raise refused
    return np.stack(decoded)
