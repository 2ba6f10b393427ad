"""CIFAR-10 as uint8 arrays: read once (image folder or the official download), cached, split.

Two sources give the same arrays, (N, 32, 32, 3) uint8 RGB and int64 labels in the official
class order:
- an image-folder directory `train/<class>/*`, `test/<class>/*` (flag `--data-dir` or env
  `CIFAR10_DIR`), decoded by the service's own `decode_image`, so training sees exactly the
  pixels the service would;
- the official python batches, downloaded for users with internet (`--download`).
The result is cached as one .npz outside the repository (decoding 60,000 JPEGs takes ~30 s).

The image-folder copy is JPEG q75; the service sees clean photos. So 2,000 official training
images (0..1999) are held out of every training set as a clean validation set: their lossless
pixels come from a folder of PNGs (`--lossless-dir`, env `CIFAR10_LOSSLESS_DIR`, or
`cifar10-lossless-2k` beside the image folder) whose `index.csv` names each one's JPEG copy, or,
with `--download`, straight from the official (lossless) batches.
"""

from __future__ import annotations

import argparse
import csv
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
LOSSLESS_COUNT = 2000  # official training images 0..1999: the clean hold-out
LOSSLESS_FOLDER = "cifar10-lossless-2k"  # its usual name, beside the image folder


def cache_dir() -> Path:
    """Where decoded arrays and training runs live: never inside the repository."""
    return Path(os.environ.get("CIFAR_ONNX_CACHE", Path.home() / ".cache" / "cifar-onnx"))


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8
    labels: np.ndarray  # (N,) int64


@dataclass(frozen=True)
class Lossless:
    """The clean hold-out: the same images as the training source has them (`jpeg`, for a JPEG
    folder) and as their original pixels (`clean`), with their rows in the full training array."""

    clean: Split
    jpeg: Split
    rows: np.ndarray  # (2000,) rows of the 50,000-image training array
    source: str


@dataclass(frozen=True)
class Cifar10:
    train: Split
    val: Split  # the JPEG-validation split, held out of `train`
    test: Split
    source: str  # a sentence for logs and metadata: where the pixels came from
    lossless: Lossless | None = None  # held out of `train` too, when available
    layout: str = "split"  # "split": 45k minus the hold-out; "full": every image not held out
    full: Split | None = None  # all 50,000 training images, in the source's order
    val_rows: np.ndarray | None = None  # rows of `full` in the stratified 5,000 validation split


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


def _folder_rows(labels: np.ndarray, jpeg_copies: list[str]) -> np.ndarray:
    """Rows of the class-sorted folder array for 'train/<class>/NNNN.jpg' names (NNNN is the
    image's rank in its class folder, which `_read_folder` reads in sorted order)."""
    counts = np.bincount(labels, minlength=len(CLASSES))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = []
    for name in jpeg_copies:
        _, cls, file = name.split("/")
        label, rank = CLASSES.index(cls), int(Path(file).stem)
        if rank >= counts[label]:  # a hold-out made for another (larger) image folder
            raise ValueError(f"the clean hold-out names {name}, which the image folder does not have "
                             f"({counts[label]} {cls} training images): is it this folder's hold-out?")  # fmt: skip
        rows.append(starts[label] + rank)
    return np.asarray(rows, dtype=np.int64)


def lossless_dir(data_dir: Path | None, given: str | Path | None = None) -> Path | None:
    """The clean hold-out's folder: given, from the environment, or beside the image folder."""
    given = given or os.environ.get("CIFAR10_LOSSLESS_DIR")
    if given:
        return Path(given).resolve()
    beside = data_dir.parent / LOSSLESS_FOLDER if data_dir else None
    return beside if beside and (beside / "index.csv").is_file() else None


def _read_lossless(folder: Path, x: np.ndarray, y: np.ndarray) -> Lossless:
    with open(folder / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    where = _folder_rows(y, [r["jpeg_copy"] for r in rows])
    labels = np.asarray([CLASSES.index(r["class"]) for r in rows], dtype=np.int64)
    if not np.array_equal(labels, y[where]):
        raise ValueError(f"{folder}/index.csv does not match the image folder's classes")
    clean = np.stack([decode_image((folder / f"{int(r['index']):05d}_{r['class']}.png").read_bytes()) for r in rows])
    return Lossless(Split(clean, labels), Split(x[where], labels), where, f"{len(rows):,} lossless PNGs in {folder}")


def _official_lossless(x: np.ndarray, y: np.ndarray) -> Lossless:
    """With the official batches the training images are the originals: the first 2,000."""
    rows = np.arange(LOSSLESS_COUNT)
    part = Split(x[rows], y[rows])
    return Lossless(part, part, rows, f"official training images 0..{LOSSLESS_COUNT - 1}")


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """--data-dir and --download: where a tool reads CIFAR-10 from (load_cifar10's first two arguments)."""
    p.add_argument("--data-dir", help="image-folder CIFAR-10; env CIFAR10_DIR")
    p.add_argument("--download", action="store_true", help="the official archive, when no folder is given")


def load_cifar10(
    data_dir: str | Path | None = None,
    download: bool = False,
    lossless: str | Path | None = None,
    layout: str = "split",
) -> Cifar10:
    """Train/val/test arrays, decoded once and cached. The clean hold-out (when its folder is
    found) is removed from training. layout "split": train is the 45,000 of the stratified split
    less the hold-out, val its 5,000; "full" (a final model, after the recipe was chosen on the
    split): train is every image not held out, val the hold-out's JPEG copies."""
    if layout not in ("split", "full"):
        raise ValueError(f"layout must be 'split' or 'full', not {layout!r}")
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

    x, y = arrays["x"], arrays["y"]
    train_idx, val_idx = stratified_split(y)
    clean = lossless_dir(root, lossless) if data_dir else None
    held = _read_lossless(clean, x, y) if clean else _official_lossless(x, y) if not data_dir else None
    if held is not None:
        train_idx = np.setdiff1d(np.arange(len(y)) if layout == "full" else train_idx, held.rows)
        source += f"; clean hold-out: {held.source}"
    elif layout == "full":
        raise SystemExit("layout 'full' needs the clean hold-out (--lossless-dir or CIFAR10_LOSSLESS_DIR)")
    val = held.jpeg if layout == "full" and held else Split(x[val_idx], y[val_idx])
    return Cifar10(
        train=Split(x[train_idx], y[train_idx]),
        val=val,
        test=Split(arrays["xt"], arrays["yt"]),
        source=source,
        lossless=held,
        layout=layout,
        full=Split(x, y),
        val_rows=val_idx,
    )
