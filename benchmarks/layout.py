"""The serving layout, measured on this machine: inference workers x ONNX Runtime threads per
call, each as a real server under one and 32 connections, so that the layout a deployment runs
is a measured choice (the service logs the one in force at start, `cifar_onnx.layout`).

    python -m benchmarks.layout --seconds 5

Prints each layout's p50 at one connection and requests/s and p99 at 32, then the settings of
the one with the most requests a second at 32 connections (ties: the lower p50 at one). For an
ensemble (one graph holding several networks) it also times, at batch 1, its members run one after
another (ONNX Runtime's sequential mode, what the service does) against side by side (parallel
mode, a thread per member).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnxruntime as ort

from benchmarks.batching import sweep
from benchmarks.common import SAMPLE
from benchmarks.model_bench import percentiles, time_calls
from cifar_onnx.cpu import usable_cpus
from cifar_onnx.preprocess import decode_image
from cifar_onnx.registry import session_options

HERE = Path(__file__).resolve().parent


def candidates(cpus: int) -> dict[str, dict[str, int]]:
    """Every way to split the usable CPUs between concurrent calls and threads per call."""
    splits = [(workers, cpus // workers) for workers in range(cpus, 0, -1) if cpus % workers == 0]
    return {f"{w} worker(s) x {t} thread(s)": {"inference_workers": w, "intra_op_threads": t} for w, t in splits}


def members_side_by_side(model_path: Path, runs: int = 300) -> dict[str, float]:
    """Batch-1 median of a graph with its nodes run one after another, and with independent
    branches (an ensemble's members) on a thread each."""
    image = decode_image(SAMPLE.read_bytes())[None]
    parallel = session_options(1)
    parallel.execution_mode, parallel.inter_op_num_threads = ort.ExecutionMode.ORT_PARALLEL, 2
    out = {}
    for mode, options in (("one after another", session_options(1)), ("side by side", parallel)):
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image}
        out[mode] = percentiles(time_calls(lambda s=session, f=feed: s.run(None, f), runs, warmup=30))["median_ms"]
    return out


def sweep_layouts(model_dir: Path, seconds: float, cpus: int | None = None, default: str = "cifar10") -> dict:
    """Every layout's levels, the one with the most requests a second at 32 connections, and the
    default's members one after another against side by side."""
    layouts = candidates(cpus or usable_cpus())
    runs = sweep(model_dir, seconds, layouts)
    return {"cpus": cpus or usable_cpus(), "layouts": layouts, "runs": runs, "best": best(runs),
            "ensemble": members_side_by_side(model_dir / f"{default}.onnx")}  # fmt: skip


def best(runs: dict[str, dict]) -> str:
    return max(runs, key=lambda label: (runs[label][32]["rps"], -runs[label][1]["p50_ms"]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=HERE.parent / "model")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--cpus", type=int, default=usable_cpus(), help="usable CPUs to split (default: this process's)")
    args = p.parse_args(argv)
    found = sweep_layouts(args.model_dir, args.seconds, args.cpus)
    print(json.dumps(found["runs"], indent=1))
    chosen = found["best"]
    settings = " ".join(f"CIFAR_ONNX_{k.upper()}={v}" for k, v in found["layouts"][chosen].items())
    print(f"most requests a second at 32 connections: {chosen}\n  {settings}")


if __name__ == "__main__":
    main()
