"""The sanity check of the explanation maps: paste a CIFAR-10 test object into a larger canvas
at a known place; the region of highest evidence should fall inside the pasted box.

    python -m training.explain_check --count 300        # every served model, prints hit rates

The canvas is twice the object's side (64x64), so after the service's resize to 32x32 the object
covers a quarter of the model's input; the background is a plain colour or uniform noise (half and
half). The map explains the object's true class. A map that ignored the image would hit about
25% of the time (the box's share of the area).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cifar_onnx.explain import occlusion_map
from cifar_onnx.preprocess import to_model_input
from cifar_onnx.registry import ServedModel, load_model

CANVAS = 64


@dataclass(frozen=True)
class Composite:
    image: np.ndarray  # (32, 32, 3) uint8: the canvas as the model sees it
    label: int
    box: tuple[int, int, int, int]  # top, left, bottom, right in the model's input (exclusive)
    background: str  # plain | noise


def composites(objects: np.ndarray, labels: np.ndarray, count: int, seed: int = 0, size: int = 32) -> list[Composite]:
    """`count` canvases, each with one random test object at a random place."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        k = int(rng.integers(len(objects)))
        background = "plain" if i % 2 == 0 else "noise"
        if background == "plain":
            canvas = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (CANVAS, CANVAS, 3)).copy()
        else:
            canvas = rng.integers(0, 256, (CANVAS, CANVAS, 3), dtype=np.uint8)
        side = objects.shape[1]
        top, left = (int(v) for v in rng.integers(0, CANVAS - side + 1, 2))
        canvas[top : top + side, left : left + side] = objects[k]
        scale = size / CANVAS
        box = (round(top * scale), round(left * scale), round((top + side) * scale), round((left + side) * scale))
        out.append(Composite(to_model_input(Image.fromarray(canvas), size), int(labels[k]), box, background))
    return out


def hit(model: ServedModel, item: Composite) -> bool:
    """Whether the centre of the highest-evidence region (every pixel at the map's maximum: one
    patch, or several tied) lies in the pasted box. The centre, not np.argmax's first pixel: the
    map is constant over a patch, and the first pixel is the patch's top-left corner, which lies
    outside the box whenever the patch straddles its top or left edge."""
    heat, _, _ = occlusion_map(model, item.image, item.label)
    rows, cols = np.nonzero(heat == heat.max())
    y, x = rows.mean() + 0.5, cols.mean() + 0.5  # pixel centres, in the box's edge coordinates
    top, left, bottom, right = item.box
    return bool(top <= y <= bottom and left <= x <= right)


def hit_rate(model: ServedModel, items: list[Composite]) -> dict[str, float]:
    """Percentage of canvases whose strongest evidence lies in the pasted box, overall and by background."""
    hits = np.array([hit(model, item) for item in items])
    kinds = np.array([item.background for item in items])
    rates = {
        kind: round(100.0 * float(hits[kinds == kind].mean()), 1)
        for kind in ("plain", "noise")
        if (kinds == kind).any()
    }
    return {"all": round(100.0 * float(hits.mean()), 1), **rates, "count": len(items)}


def main(argv: list[str] | None = None) -> None:
    from training.data import add_source_arguments, load_cifar10

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("model"))
    p.add_argument("--count", type=int, default=300)
    add_source_arguments(p)
    args = p.parse_args(argv)
    data = load_cifar10(args.data_dir, args.download)
    items = composites(data.test.images, data.test.labels, args.count)
    results = {path.stem: hit_rate(load_model(path, 1), items) for path in sorted(args.model_dir.glob("*.onnx"))}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
