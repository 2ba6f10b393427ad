"""Dynamic batching: the same server at each `CIFAR_ONNX_MAX_BATCH`, one image a request, at
concurrency 1 and 32, so that the default can be chosen by measurement.

    python -m benchmarks.batching --seconds 5      # also part of python -m benchmarks.run

For each setting: p50/p99 and requests/s at both levels, and the mean images per ONNX Runtime call
from the server's own `/metrics` histogram (`cifar_onnx_batch_images`) over the concurrency-32
level. Setting 1 is the service without batching.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx

from benchmarks import load
from cifar_onnx.settings import Settings

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "tests" / "data" / "cifar" / "cat.jpg"
SETTINGS = (1, 4, 8, 16, 32, 64)
LEVELS = (1, 32)


def batch_histogram(url: str, model: str) -> tuple[float, float]:
    """(sum, count) of the images-per-call histogram of `model` so far."""
    values = {}
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f'cifar_onnx_batch_images_{part}{{model="{model}"}}'):
                values[part] = float(line.split()[-1])
    return values.get("sum", 0.0), values.get("count", 0.0)


def sweep(model_dir: Path, seconds: float, variants: dict[object, dict[str, object]]) -> dict:
    """One server per variant (its settings as CIFAR_ONNX_* variables), one image a request at
    concurrency 1 and 32; per level p50/p99, requests/s and the mean images per ONNX Runtime call."""
    default = Settings().default_model or "cifar10"
    runs: dict = {}
    for label, settings in variants.items():
        command, env = load.service_command(load.free_port(), model_dir, **settings)
        with load.run_server(command, env, "/health/ready") as server:
            url = server.url + "/api/v1/predict"
            load.check_answer(url, SAMPLE)
            run: dict = {}
            for connections in LEVELS:
                load.wait_idle(server.url)
                before = batch_histogram(server.url, default)
                run[connections] = load.wrk(url, SAMPLE, connections, seconds)
                after = batch_histogram(server.url, default)
                calls = after[1] - before[1]
                run[connections]["images_per_call"] = round((after[0] - before[0]) / calls, 2) if calls else None
            runs[label] = run
            print(f"{label}: " + ", ".join(
                f"c={c} p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms {r['rps']} req/s {r['images_per_call']} img/call"
                for c, r in run.items()), flush=True)  # fmt: skip
    return runs


def batching(model_dir: Path, seconds: float, settings: tuple[int, ...] = SETTINGS) -> dict:
    runs = sweep(model_dir, seconds, {max_batch: {"max_batch": max_batch} for max_batch in settings})
    return {"model": Settings().default_model or "cifar10", "default_max_batch": Settings().max_batch, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=HERE.parent / "model")
    p.add_argument("--seconds", type=float, default=5)
    args = p.parse_args(argv)
    print(json.dumps(batching(args.model_dir, args.seconds), indent=1))


if __name__ == "__main__":
    main()
