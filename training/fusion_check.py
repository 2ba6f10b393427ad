"""Each served int8 model's accuracy on this CPU as the service runs it (fused integer kernels when
the load-time self-check passes) against the same file forced unfused (dequantise, float op,
quantise: the reference meaning of the graph), and how often the two give the same answer.
Issue #17 asks that every model run fused on an AVX2-only CPU within 0.1 point of its unfused accuracy.

    python -m training.fusion_check                           # every model in model/, all test images
    python -m training.fusion_check --name airbench --limit 1000 --split val
    python -m benchmarks.avx2_only -- python -m training.fusion_check   # as on an AVX2-only CPU

Prints a Markdown table headed by the CPU (docs/MODEL.md, "int8 on x86 CPUs without VNNI").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cifar_onnx import cpu, registry
from training.data import add_source_arguments, load_cifar10
from training.export import accuracy, ort_probs


def check(path: Path, images: np.ndarray, labels: np.ndarray, threads: int) -> dict[str, object]:
    served, mode = registry.make_session(path, threads)
    reference, _ = registry.make_session(path, threads, "off")
    start = time.perf_counter()
    fast = ort_probs(served, images)
    seconds = time.perf_counter() - start
    exact = ort_probs(reference, images)
    return {"mode": mode, "served": accuracy(fast, labels), "unfused": accuracy(exact, labels),
            "same": 100 * float((fast.argmax(1) == exact.argmax(1)).mean()), "images_per_s": len(images) / seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", action="append", help="a served model (repeatable); default: all in --model-dir")
    p.add_argument("--model-dir", type=Path, default=Path("model"))
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--limit", type=int, default=0, help="the first N images only")
    p.add_argument("--threads", type=int, default=2)
    add_source_arguments(p)
    args = p.parse_args(argv)
    data = load_cifar10(args.data_dir, args.download)
    split = data.test if args.split == "test" else data.val
    images, labels = split.images, split.labels
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    paths = [args.model_dir / f"{n}.onnx" for n in args.name] if args.name else sorted(args.model_dir.glob("*.onnx"))
    print(f"{cpu.cpu_model()} ({', '.join(cpu.relevant_flags()) or 'no AVX2'}); {len(images)} {args.split} images, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")  # fmt: skip
    print("| model | int8 kernels as served | accuracy as served | forced unfused | difference (points) "
          "| same answer | served: images/s |\n| --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    for path in paths:
        r = check(path, images, labels, args.threads)
        print(f"| `{path.stem}` | {r['mode']} | {r['served']:.2f}% | {r['unfused']:.2f}% | "
              f"{r['served'] - r['unfused']:+.2f} | {r['same']:.2f}% | {r['images_per_s']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
