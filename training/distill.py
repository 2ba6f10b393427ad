"""Knowledge distillation from served ONNX models: the teacher's answers, cached, and the loss.

The teacher is one or more exported graphs (`model/<name>.onnx`), run with ONNX Runtime exactly as
the service runs them, so any served model or ensemble can teach without its checkpoint. Every
served graph already averages an image with its mirror (test-time augmentation inside the graph),
so one pass over the training images gives the target for both an image and its flip. The pass is
paid once: the probabilities are cached under the cache folder, keyed by the teacher files' and
the training images' hashes, and reused by every later run with the same teacher and data.

Loss (Hinton et al. 2015): (1 - alpha) * CE(student, label) + alpha * T^2 * KL(teacher_T || student_T),
both softened by the temperature T; T^2 keeps the soft term's gradient on the scale of the hard one.
The student sees augmented images (shifted, cut out, mirrored) while the target is the teacher's
answer for the clean image: a shift of a few pixels rarely changes what the image shows.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.data import cache_dir


def teacher_key(paths: list[Path], images: np.ndarray) -> str:
    """Which cache file belongs to these teacher graphs and these images."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(hashlib.sha256(np.ascontiguousarray(images).data).digest())
    return digest.hexdigest()[:16]


def teacher_probs(paths: list[Path], images: np.ndarray, threads: int = 2, batch: int = 256) -> np.ndarray:
    """The mean of the teachers' probabilities for every image, (N, 10) float32: read from the
    cache when these teachers have seen these images before, else computed once and stored."""
    from training.export import ort_probs, session  # onnxruntime: only when a teacher is used

    cache = cache_dir() / "teachers" / f"{teacher_key(paths, images)}.npy"
    if cache.exists():
        print(f"teacher: cached answers {cache}", flush=True)
        return np.load(cache)
    started = time.time()
    probs = np.mean([ort_probs(session(path, threads), images, batch) for path in paths], axis=0).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, probs)
    tmp.replace(cache)
    print(f"teacher: {len(images):,} images through {', '.join(p.name for p in paths)} in "
          f"{time.time() - started:.0f} s, cached in {cache}", flush=True)  # fmt: skip
    return probs


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """(1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T). `teacher` holds probabilities
    (what a served graph returns); softened as p^(1/T), renormalised, which is softmax(log p / T)."""
    hard = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if alpha == 0:
        return hard
    target = F.log_softmax(teacher.clamp_min(1e-8).log() / temperature, dim=1)
    student = F.log_softmax(logits / temperature, dim=1)
    soft = F.kl_div(student, target, log_target=True, reduction="batchmean")
    return (1 - alpha) * hard + alpha * temperature**2 * soft
