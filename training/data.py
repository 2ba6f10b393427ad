"""CIFAR-10 as uint8 arrays: read once (image folder or the official download), cached, split.

Two sources give the same arrays, (N, 32, 32, 3) uint8 RGB and int64 labels in the official
class order:
- an image-folder directory `train/<class>/*`, `test/<class>/*` (flag `--data-dir` or env
  `CIFAR10_DIR`), decoded by the service's own `decode_image`, so training sees exactly the
  pixels the service would;
- the official python batches, downloaded for users with internet (`--download`).
The result is cached as one .npz outside the repository (decoding 60,000 JPEGs takes ~30 s).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_onnx.preprocess import decode_image

CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
VAL_FRACTION = 0.1  # 10% of each class held out: 5,000 of the 50,000
SPLIT_SEED = 20261124  # fixed: the split never changes between runs


def cache_dir() -> Path:
    """Where decoded arrays and training runs live: never inside the repository."""
    return Path(os.environ.get("CIFAR_ONNX_CACHE", Path.home() / ".cache" / "cifar-onnx"))


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8
    labels: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class Cifar10:
    train: Split
    val: Split
    test: Split
    source: str  # a sentence for logs and metadata: where the pixels came from


def _read_folder(root: Path, part: str) -> Split:
    images, labels = [], []
    for index, name in enumerate(CLASSES):
        files = sorted((root / part / name).iterdir())
        if not files:
            raise FileNotFoundError(f"no images in {root / part / name}")
        for path in files:
            images.append(decode_image(path.read_bytes()))
            labels.append(index)
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64))


def _download_official(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "cifar-10-python.tar.gz"
    if not archive.exists():
        print(f"downloading {OFFICIAL_URL}")
        urllib.request.urlretrieve(OFFICIAL_URL, archive)
    if hashlib.md5(archive.read_bytes()).hexdigest() != OFFICIAL_MD5:
        archive.unlink()
        raise RuntimeError("the downloaded CIFAR-10 archive has the wrong checksum; run again")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "cifar-10-batches-py"


def _read_official_batches(folder: Path, names: list[str]) -> Split:
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images.append(batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[b"labels"])
    return Split(np.concatenate(images).astype(np.uint8), np.asarray(labels, dtype=np.int64))


def stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): VAL_FRACTION of each class held out, chosen by a fixed seed."""
    rng = np.random.default_rng(SPLIT_SEED)
    held_out = []
    for c in range(len(CLASSES)):
        members = np.flatnonzero(labels == c)
        held_out.append(rng.permutation(members)[: round(len(members) * VAL_FRACTION)])
    val = np.concatenate(held_out)
    val.sort()
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def load_cifar10(data_dir: str | Path | None = None, download: bool = False) -> Cifar10:
    """The 45,000/5,000/10,000 train/val/test arrays, decoded once and cached."""
    data_dir = data_dir or os.environ.get("CIFAR10_DIR")
    if data_dir:
        root = Path(data_dir).resolve()
        key = hashlib.sha1(str(root).encode()).hexdigest()[:10]
        source = f"image folder {root}"
    elif download:
        root, key, source = cache_dir() / "official", "official", "official CIFAR-10 python batches"
    else:
        raise SystemExit("no data: give --data-dir (or CIFAR10_DIR) or --download")

    cache = cache_dir() / f"cifar10-{key}.npz"
    if cache.exists():
        arrays = dict(np.load(cache))
    else:
        if data_dir:
            full, test = _read_folder(root, "train"), _read_folder(root, "test")
        else:
            folder = _download_official(root)
            full = _read_official_batches(folder, [f"data_batch_{i}" for i in range(1, 6)])
            test = _read_official_batches(folder, ["test_batch"])
        arrays = dict(x=full.images, y=full.labels, xt=test.images, yt=test.labels)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # several processes (torchrun) may write it
        np.savez(tmp, **arrays)
        tmp.replace(cache)

    train_idx, val_idx = stratified_split(arrays["y"])
    x, y = arrays["x"], arrays["y"]
    return Cifar10(
        train=Split(x[train_idx], y[train_idx]),
        val=Split(x[val_idx], y[val_idx]),
        test=Split(arrays["xt"], arrays["yt"]),
        source=source,
    )
