"""Model level: the same model and inputs on ONNX Runtime int8, ONNX Runtime fp32 and PyTorch
eager fp32. Batch-1 latency (1 and 2 threads), batch-64 throughput, and, each in a fresh
process, cold start (imports to first prediction) and peak resident memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Runtime:
    label: str  # "ORT int8", "ORT fp32", "PyTorch eager fp32"
    kind: str  # ort | torch
    path: Path  # an .onnx file, or the model's metadata (torch rebuilds it from the checkpoints)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"median_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}  # fmt: skip


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ort_predictor(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    from cifar_onnx.registry import make_session

    # Made as the service makes its sessions (int8 kernels chosen by the self-check on this CPU).
    session = make_session(path, threads)[0]
    return lambda batch: session.run(None, {"image": batch})[0]


def has_checkpoints(meta: dict) -> bool:
    members = meta.get("members", [])
    return bool(members) and all(Path(m.get("checkpoint", "")).exists() for m in members)


def torch_predictor(meta_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The exact graph that was exported (members, TTA, softmax), in eager PyTorch: trained from
    the checkpoints where they are on this machine, else the same architectures untrained."""
    import torch

    from training.export import Served, load_run, rebuilt

    torch.set_num_threads(threads)
    meta = json.loads(meta_path.read_text())
    trained = has_checkpoints(meta)
    members = [load_run(Path(m["checkpoint"]).parent)[0] if trained else rebuilt(m["name"], m["recipe"]["model"])
               for m in meta["members"]]  # fmt: skip
    served = Served(members, [m["tta"] for m in meta["members"]]).eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return served(torch.from_numpy(batch)).numpy()

    return predict


def predictor(runtime: Runtime, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    return ort_predictor(runtime.path, threads) if runtime.kind == "ort" else torch_predictor(runtime.path, threads)


def measure_in_process(runtime: Runtime, images: np.ndarray, runs: int) -> dict[str, object]:
    result: dict[str, object] = {}
    if runtime.kind == "ort":  # how the service would run its int8 operators on this CPU
        from cifar_onnx.registry import make_session

        result["int8_mode"] = make_session(runtime.path, 1)[1]
    else:
        result["trained"] = has_checkpoints(json.loads(runtime.path.read_text()))
    for threads in (1, 2):
        predict = predictor(runtime, threads)
        one = images[:1]
        result[f"batch1_{threads}t"] = percentiles(time_calls(lambda p=predict, x=one: p(x), runs, warmup=30))
        batch = images[:64]
        seconds = time_calls(lambda p=predict, x=batch: p(x), runs=max(5, runs // 50), warmup=2)
        result[f"batch64_{threads}t_images_per_s"] = round(64 / float(np.median(seconds)), 1)
    return result


# Peak RSS from VmHWM: it belongs to this address space, so it starts afresh at exec (ru_maxrss
# does not: it would report the benchmark parent's peak).
COLD_START = """
import sys
sys.path[:0] = {paths!r}
import numpy as np
from benchmarks.model_bench import Runtime, predictor
from pathlib import Path
predict = predictor(Runtime("", {kind!r}, Path({path!r})), 1)
predict(np.zeros((1, 32, 32, 3), dtype=np.uint8))
status = open("/proc/self/status").read().split("VmHWM:")[1].split()
print(int(status[0]) / 1024)
"""


# The served model's batch-1 median in a fresh process, as the model level measures it.
MEDIAN_NOW = """
import sys
sys.path[:0] = {paths!r}
from pathlib import Path
from benchmarks.model_bench import Runtime, predictor, percentiles, time_calls
from benchmarks.run import sample_images
predict, one = predictor(Runtime("", "ort", Path({path!r})), 1), sample_images(1)
print(percentiles(time_calls(lambda: predict(one), {runs}, warmup=30))["median_ms"])
"""


def median_now(path: Path, runs: int) -> float:
    """The model level's batch-1 median (1 thread) of `path`, measured now: taken right after the
    service's concurrency-1 level, it is the same machine at the same moment (a CPU's speed drifts
    by 10% and more between minutes here, as much as the service's own overhead)."""
    code = MEDIAN_NOW.format(paths=[str(REPO), str(REPO / "src")], path=str(path), runs=runs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return float(out.stdout.split()[-1])


def cold_start(runtime: Runtime, repeats: int = 3) -> dict[str, float]:
    """Process spawn (interpreter start included) -> imports -> model loaded -> first prediction
    -> exit, timed from outside; best of `repeats`."""
    runs = []
    for _ in range(repeats):
        code = COLD_START.format(paths=[str(REPO), str(REPO / "src")], kind=runtime.kind, path=str(runtime.path))
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
        runs.append((time.perf_counter() - start, float(out.stdout.split()[-1])))
    return {"cold_start_s": round(min(r[0] for r in runs), 3), "peak_rss_mb": round(min(r[1] for r in runs), 1)}


def recovered_fp32(int8: Path, work: Path) -> Path | None:
    """The float network a served QDQ graph computes (training.requantise.recover_fp32: weights
    dequantised, each activation's quantisation a Clip to its range), for a model whose fp32
    export is gone; cached beside the exports, keyed by the int8 file's hash. None without torch."""
    try:
        from training.requantise import recover_fp32
    except ImportError:
        return None
    import hashlib

    path = work / f"recovered-{hashlib.sha256(int8.read_bytes()).hexdigest()[:16]}.fp32.onnx"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        recover_fp32(int8, path)
    return path


def runtimes_for(model_json: Path, export_dir: Path) -> list[Runtime]:
    """int8 is the served file; fp32 and the torch checkpoints come from the export step's
    cache (they are not shipped); whatever is missing is left out, and said so."""
    meta = json.loads(model_json.read_text())
    name = meta["name"]
    found = [Runtime("ORT int8", "ort", model_json.with_suffix(".onnx"))]
    fp32 = export_dir / name / f"{name}.fp32.onnx"
    if fp32.exists():
        found.append(Runtime("ORT fp32", "ort", fp32))
    elif (recovered := recovered_fp32(model_json.with_suffix(".onnx"), export_dir / name)) is not None:
        found.append(Runtime("ORT fp32 (recovered from the int8 graph)", "ort", recovered))
    else:
        print(f"  {name}: no fp32 export at {fp32}; ORT fp32 left out (run training.export)")
    if not all("recipe" in m for m in meta.get("members", [{}])):
        print(f"  {name}: its metadata records no architecture; PyTorch eager left out")
        return found
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"  {name}: torch not installed; PyTorch eager left out (pip install .[train])")
        return found
    if not has_checkpoints(meta):
        print(f"  {name}: training checkpoints not on this machine; PyTorch eager times the same "
              "architecture untrained")  # fmt: skip
    found.append(Runtime("PyTorch eager fp32", "torch", model_json))
    return found


def bench_model(model_json: Path, export_dir: Path, images: np.ndarray, runs: int) -> dict[str, dict]:
    results = {}
    for runtime in runtimes_for(model_json, export_dir):
        print(f"  {model_json.stem}: {runtime.label}", flush=True)
        results[runtime.label] = {**measure_in_process(runtime, images, runs), **cold_start(runtime)}
    return results
