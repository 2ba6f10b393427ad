"""Where a request's time goes besides the model, and what limits the overhead against the floor.

    python -m benchmarks.overhead --seconds 4      # also part of python -m benchmarks.run

Measured on the machine at hand:
- **The service's own path**: the real server serving a near-free model (a tiny ONNX graph,
  tests/tiny_model.py), against the bare upload app (benchmarks/floor_app.py), taking turns
  for a few rounds at one connection. Its p50 over the floor's is the cost of everything the
  service adds: middleware, admission, the hand-off to a worker thread (none for a light request
  alone on one connection), the answer, its JSON.
  One hand-off to a worker thread and back, with nothing run in it, is timed on its own.
- **After an inference**: each stage of our own request path timed in-process alone, and right
  after a call of the default model, as it runs in the server. On CPUs whose int8 kernels use
  AMX or AVX-512, the core runs the Python that follows a call measurably slower (caches and
  clocks); that cost lands in the overhead the benchmark reports, and no code change removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from benchmarks import load
from benchmarks.common import REPO, SAMPLE
from cifar_onnx.classify import predictions, timed_predict
from cifar_onnx.preprocess import decode_image
from cifar_onnx.registry import load_model
from cifar_onnx.threads import Threads
from tests.tiny_model import write_tiny_model


def service_path(seconds: float, rounds: int = 3) -> dict:
    """p50 at one connection of the floor and of the service with a near-free model, in turns."""
    p50: dict[str, list[float]] = {"floor": [], "service": []}
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_model(Path(folder), "cifar10", default=True)
        for _ in range(rounds):
            command, env = load.floor_command(load.free_port())
            with load.run_server(command, env, "/health") as server:
                p50["floor"].append(load.wrk(server.url + "/api/v1/predict", SAMPLE, 1, seconds)["p50_ms"])
            command, env = load.service_command(load.free_port(), Path(folder))
            with load.run_server(command, env, "/health/ready") as server:
                load.check_answer(server.url + "/api/v1/predict", SAMPLE)
                p50["service"].append(load.wrk(server.url + "/api/v1/predict", SAMPLE, 1, seconds)["p50_ms"])
    floor, service = statistics.median(p50["floor"]), statistics.median(p50["service"])
    return {"rounds": p50, "floor_p50_ms": floor, "service_p50_ms": service, "ratio": round(service / floor, 2)}


def _median_us(step: Callable[[], object], before: Callable[[], object] | None, runs: int) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return round(1e6 * statistics.median(times), 1)


def after_inference(model_path: Path, runs: int = 300) -> dict:
    """Each stage of our path alone, and right after one call of the model (as in the server)."""
    model = load_model(model_path, threads=1)
    data = SAMPLE.read_bytes()
    image = decode_image(data, model.image_size)[None]
    probs, seconds = timed_predict(model, image)
    answer = predictions(model, probs, seconds, 3)[0]
    stages = {
        "decode the upload": lambda: decode_image(data, model.image_size),
        "build the answer (top-k, unsure)": lambda: predictions(model, probs, seconds, 3),
        "encode it as JSON": lambda: msgspec.json.encode(answer),
    }
    infer = lambda: model.predict(image)  # noqa: E731
    return {"model": model.name, "inference_us": _median_us(infer, None, runs),
            "stages": {name: {"alone_us": _median_us(step, None, runs), "after_inference_us": _median_us(step, infer, runs)}
                       for name, step in stages.items()}}  # fmt: skip


def hand_off(runs: int = 2000) -> dict:
    """One round trip from the event loop to a worker thread and back with nothing run in it, as
    the service makes it (cifar_onnx.threads): on cores that sleep when idle, mostly wake-ups."""
    threads = Threads(2)

    async def measure() -> list[float]:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            await threads.run(int)
            times.append(time.perf_counter() - start)
        return times

    try:
        times = asyncio.run(measure())
    finally:
        threads.executor.shutdown()
    return {"runs": runs, "median_us": round(1e6 * statistics.median(times), 1)}


def overhead(model_dir: Path, default: str, seconds: float) -> dict:
    return {"service_path": service_path(seconds), "hand_off": hand_off(),
            "after_inference": after_inference(model_dir / f"{default}.onnx")}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=REPO / "model")
    p.add_argument("--model", default="cifar10")
    p.add_argument("--seconds", type=float, default=4)
    args = p.parse_args(argv)
    print(json.dumps(overhead(args.model_dir, args.model, args.seconds), indent=1))


if __name__ == "__main__":
    main()
