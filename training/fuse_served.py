"""Bring served files along with the export's graph fusions (training.gelu), in place.

    python -m training.fuse_served --name cifar10 --name airbench

A file is rewritten only if every answer on the validation, test and clean hold-out images stays
the same, so the accuracy its metadata records still holds; the metadata gets the new sha256 and
size, and says what was done under `gelu_fused`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cifar_onnx.registry import _session
from training.data import add_source_arguments, load_cifar10
from training.export import ort_probs, sha256
from training.gelu import fuse_gelu_file


def answers(path: Path, sets: dict[str, np.ndarray], threads: int) -> dict[str, np.ndarray]:
    session = _session(path, threads, True)
    return {name: ort_probs(session, images) for name, images in sets.items()}


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", action="append", required=True, help="a served model: model/<name>.onnx and .json")
    p.add_argument("--model-dir", type=Path, default=Path("model"))
    add_source_arguments(p)
    p.add_argument("--limit", type=int, default=0, help="compare on the first N images of each set (tests)")
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    data = load_cifar10(args.data_dir, args.download)
    sets = {"val": data.val.images, "test": data.test.images}
    if data.lossless is not None:
        sets |= {"lossless clean": data.lossless.clean.images, "lossless jpeg": data.lossless.jpeg.images}
    sets = {name: images[: args.limit or None] for name, images in sets.items()}
    failed = False
    for name in args.name:
        source = args.model_dir / f"{name}.onnx"
        candidate = source.with_suffix(".gelu.onnx")
        count = fuse_gelu_file(source, candidate)
        if not count:
            print(f"{name}: no GELU to fuse", flush=True)
            continue
        before, after = answers(source, sets, args.threads), answers(candidate, sets, args.threads)
        changed = {key: int((before[key].argmax(1) != after[key].argmax(1)).sum()) for key in sets}
        largest = max(float(np.abs(before[key] - after[key]).max()) for key in sets)
        images = sum(len(images) for images in sets.values())
        print(f"{name}: {count} GELU fused; answers changed {changed} of {images} images; largest "
              f"probability difference {largest:.2e}", flush=True)  # fmt: skip
        if any(changed.values()):
            candidate.unlink()
            failed = True
            continue
        meta: dict[str, Any] = json.loads(source.with_suffix(".json").read_text())
        meta["gelu_fused"] = {"from": f"{source.name} sha256 {meta['sha256']}", "replaced": count,
                              "images_compared": images, "largest_probability_difference": largest,
                              "command": " ".join(["python", "-m", "training.fuse_served", *(argv if argv is not None else sys.argv[1:])])}  # fmt: skip
        candidate.replace(source)
        meta["sha256"] = sha256(source)
        meta["size_bytes"] = {**meta.get("size_bytes", {}), "int8": source.stat().st_size}
        source.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        print(f"wrote {source}", flush=True)
    if failed:
        sys.exit("a graph whose answers changed was left as it was")


if __name__ == "__main__":
    main()
