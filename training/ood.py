"""An out-of-distribution set that anyone can rebuild offline: pictures of none of the ten classes.

    python -m training.ood            # writes ~/.cache/cifar-onnx/ood/<kind>/<n>.png and prints counts

Every picture is encoded as PNG and decoded by the service's own `decode_image`, so the models see
exactly what they would see if a person uploaded it. Sources and licences:
- photos: random square crops (and the whole centre square) of the photographs bundled in the
  scikit-image wheel (each CC0 or public domain, per its `skimage.data` docstring) and scikit-learn's
  two sample photos (china.jpg, flower.jpg: CC BY 2.0, Flickr users danielbuechele and vultilion).
  Left out because they show, or nearly show, a CIFAR-10 class: chelsea (a cat), horse (a horse's
  silhouette) and the motorcycle pair (a vehicle close to `automobile`).
- digits: scikit-learn's handwritten digits (UCI, CC BY 4.0), 8x8, as white on black and black on white.
- text: words rendered with Pillow's bundled font in random colours and sizes (generated here).
- textures: stripes, checkerboards, gratings and smoothed-noise blobs (generated here).
- noise: uniform and Gaussian pixel noise (generated here).
- flat: a single random colour (generated here).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from cifar_onnx.preprocess import decode_image
from training.data import cache_dir

SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "clock_motion.png", "coffee.png", "coins.png",
                  "color.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png",
                  "page.png", "retina.jpg", "rocket.jpg", "text.png")  # fmt: skip
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
COUNTS = {"photos": 200, "digits": 100, "text": 100, "textures": 100, "noise": 50, "flat": 50}
WORDS = ("hello", "CIFAR", "invoice", "42", "Monday", "ONNX", "total: 17.50", "привіт", "exit", "π ≈ 3.14",
         "lorem ipsum", "STOP", "2026-11-25", "page 3", "cat?", "WARNING")  # fmt: skip


def package_dir(name: str) -> Path:
    """A package's folder without importing it (we only read its data files)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed: pip install -e '.[train]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _random_crop(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = min(photo.size)
    crop = int(side * rng.uniform(0.25, 1.0))
    left, top = (int(rng.integers(0, dim - crop + 1)) for dim in photo.size)
    return photo.crop((left, top, left + crop, top + crop))


def photos(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    files = [package_dir("skimage") / "data" / f for f in SKIMAGE_PHOTOS]
    files += [package_dir("sklearn") / "datasets" / "images" / f for f in SKLEARN_PHOTOS]
    loaded = [Image.open(f).convert("RGB") for f in files]
    for i in range(count):
        photo = loaded[i % len(loaded)]
        yield photo if i < len(loaded) else _random_crop(photo, rng)  # each whole photo once, then crops


def digits(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    with gzip.open(package_dir("sklearn") / "datasets" / "data" / "digits.csv.gz", "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",")
    pixels = (rows[:, :64].reshape(-1, 8, 8) * (255 / 16)).round().astype(np.uint8)
    for i, k in enumerate(rng.permutation(len(pixels))[:count]):
        ink = pixels[k] if i % 2 == 0 else 255 - pixels[k]
        yield Image.fromarray(ink).convert("RGB")


def text(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    for _ in range(count):
        background, ink = rng.integers(0, 256, (2, 3))
        canvas = Image.new("RGB", (128, 128), tuple(int(v) for v in background))
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=int(rng.integers(14, 40)))
        for line in range(int(rng.integers(1, 4))):
            word = WORDS[int(rng.integers(len(WORDS)))]
            draw.text((int(rng.integers(0, 40)), 10 + 38 * line), word, fill=tuple(int(v) for v in ink), font=font)
        yield canvas


def textures(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    y, x = np.mgrid[0:64, 0:64].astype(np.float64)
    for i in range(count):
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float64)
        kind = i % 4
        if kind == 0:  # stripes at a random angle and period
            angle, period = rng.uniform(0, np.pi), rng.uniform(3, 16)
            level = (np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float64)
        elif kind == 1:  # checkerboard
            cell = int(rng.integers(2, 16))
            level = ((x // cell + y // cell) % 2).astype(np.float64)
        elif kind == 2:  # smooth grating, two frequencies
            fx, fy = rng.uniform(0.05, 0.5, 2)
            level = 0.5 + 0.25 * (np.sin(fx * x) + np.sin(fy * y))
        else:  # blobs: smoothed noise
            noise = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8))
            level = np.asarray(noise.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 6)))), dtype=np.float64)
            level = (level - level.min()) / max(np.ptp(level), 1.0)
        yield Image.fromarray((a + (b - a) * level[..., None]).clip(0, 255).astype(np.uint8))


def noise(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    for i in range(count):
        if i % 2 == 0:
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        else:
            pixels = rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (32, 32, 3)).clip(0, 255).astype(np.uint8)
        yield Image.fromarray(pixels)


def flat(rng: np.random.Generator, count: int) -> Iterator[Image.Image]:
    for _ in range(count):
        yield Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 256, 3)))


KINDS: dict[str, Callable[[np.random.Generator, int], Iterator[Image.Image]]] = {
    "photos": photos, "digits": digits, "text": text, "textures": textures, "noise": noise, "flat": flat,
}  # fmt: skip


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def build(seed: int = 0, save_to: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 as the service decodes them, and each one's kind."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind, make in KINDS.items():
        for i, picture in enumerate(make(rng, COUNTS[kind])):
            data = png(picture)
            if save_to is not None:
                (save_to / kind).mkdir(parents=True, exist_ok=True)
                (save_to / kind / f"{i:03d}.png").write_bytes(data)
            images.append(decode_image(data))
            kinds.append(kind)
    return np.stack(images), np.asarray(kinds)


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=cache_dir() / "ood")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    images, kinds = build(save_to=args.out)
    names, counts = np.unique(kinds, return_counts=True)
    print(
        f"{len(images)} pictures in {args.out}: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=False))
    )


if __name__ == "__main__":
    main()
