"""The whole benchmark suite in one command; writes benchmarks/RESULTS.md, results.json and a plot.

    python -m benchmarks.run            # the whole suite (several minutes; keep the machine idle)
    python -m benchmarks.run --quick    # a few seconds per level and a short soak: a smoke test

Keep the machine otherwise idle while it runs: every figure is wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks import history, load
from benchmarks.avx2_only import MASKED_SUFFIX
from benchmarks.batching import batching
from benchmarks.common import HERE, REPO, SAMPLE, machine
from benchmarks.hostile import hostile
from benchmarks.layout import sweep_layouts as layout_sweep
from benchmarks.model_bench import bench_model, median_now
from benchmarks.overhead import overhead
from benchmarks.overload import overload
from cifar_onnx.preprocess import decode_image

# Up to the default queue bound: past it the server sheds, which the overload runs measure (with a
# client that times every answer; wrk's percentiles are wrong for fast refusals, flood.py says why).
CONCURRENCY = (1, 8, 32)


def sample_images(count: int = 64) -> np.ndarray:
    files = sorted((REPO / "tests" / "data" / "cifar").glob("*.jpg"))
    decoded = [decode_image(f.read_bytes()) for f in files]
    return np.stack([decoded[i % len(decoded)] for i in range(count)])


def service_level(model_dir: Path, default_model: str, seconds: float, soak_requests: int, runs: int) -> dict:
    out: dict = {"cold_start_s": []}
    for _ in range(3):  # process start -> /health/ready answers 200 (model loaded and warmed up)
        command, env = load.service_command(load.free_port(), model_dir)
        with load.run_server(command, env, "/health/ready") as server:
            out["cold_start_s"].append(server.ready_seconds)
    command, env = load.service_command(load.free_port(), model_dir)
    with load.run_server(command, env, "/health/ready") as server:
        single, batch = server.url + "/api/v1/predict", server.url + "/api/v1/predict/batch"
        load.check_answer(single, SAMPLE)
        out["rss_idle_mb"] = load.tree_rss_mb(server.pid)
        out["single"] = {}
        for c in CONCURRENCY:
            load.wait_idle(server.url)
            if c != 1:
                out["single"][c] = load.wrk(single, SAMPLE, c, seconds)
                continue
            # At concurrency 1 every call is one image: the server's own inference time, same moment.
            before = load.inference_totals(server.url, default_model)
            out["single"][c] = load.wrk(single, SAMPLE, c, seconds)
            after = load.inference_totals(server.url, default_model)
            if after[1] > before[1]:
                mean = 1000 * (after[0] - before[0]) / (after[1] - before[1])
                out["single"][c]["server_inference_mean_ms"] = round(mean, 3)
            # ... and the model level's median right after it (the overhead is p50 minus that).
            out["single"][c]["model_median_after_ms"] = median_now(model_dir / f"{default_model}.onnx", runs)
        load.wait_idle(server.url)
        out["explain"] = load.wrk(server.url + "/api/v1/explain", SAMPLE, 1, seconds)
        load.wait_idle(server.url)
        out["batch8"] = {c: load.wrk(batch, SAMPLE, c, seconds, field_name="files", copies=8) for c in (1, 8)}
        load.wait_idle(server.url)
        out["rss_after_levels_mb"] = load.tree_rss_mb(server.pid)
        rps = out["single"][32]["rps"] or 1
        # Sized from the c=32 level's throughput, with room: over minutes this machine has run 16% slower
        # than in that level's seconds, and a soak cut short of its requests reads as a missed target.
        duration = max(5.0, 1.4 * soak_requests / rps)
        load.wait_idle(server.url)
        with load.MemorySampler(server.pid) as memory:
            soak = load.wrk(single, SAMPLE, 32, round(duration, 1))
        soak["rss_samples_mb"] = memory.samples
        soak["rss_start_mb"], soak["rss_end_mb"] = (memory.samples[0], memory.samples[-1]) if memory.samples else (0, 0)
        out["soak"] = soak
        out["rss_after_soak_mb"] = load.tree_rss_mb(server.pid)
    return out


def floor_level(seconds: float) -> dict:
    """The bare upload app's HTTP p50 at concurrency 1: what parsing, decoding and answering cost
    with nothing else (benchmarks/floor_app.py)."""
    command, env = load.floor_command(load.free_port())
    with load.run_server(command, env, "/health") as server:
        load.check_answer(server.url + "/api/v1/predict", SAMPLE)
        return {"single": {1: load.wrk(server.url + "/api/v1/predict", SAMPLE, 1, seconds)}}


def baseline_level(model_json: Path, seconds: float) -> dict:
    command, env = load.baseline_command(load.free_port(), model_json)
    with load.run_server(command, env, "/health") as server:
        load.check_answer(server.url + "/predict", SAMPLE)
        out = {"ready_s": server.ready_seconds, "rss_idle_mb": load.tree_rss_mb(server.pid)}
        out["single"] = {c: load.wrk(server.url + "/predict", SAMPLE, c, seconds) for c in CONCURRENCY}
        out["rss_after_mb"] = load.tree_rss_mb(server.pid)
    return out


def plot(service: dict, baseline: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(10, 3.8))
    series = [("cifar-onnx (Litestar + ORT int8)", service["single"], "tab:blue")]
    if baseline:
        series.append(("baseline (Flask + PyTorch eager)", baseline["single"], "tab:red"))
    for label, levels, colour in series:
        cs = sorted(levels)
        lat.plot(cs, [levels[c]["p50_ms"] for c in cs], "o-", color=colour, label=f"{label} p50")
        lat.plot(cs, [levels[c]["p99_ms"] for c in cs], "o--", color=colour, label=f"{label} p99")
        thr.plot(cs, [levels[c]["rps"] for c in cs], "o-", color=colour, label=label)
    lat.set(xscale="log", yscale="log", xlabel="concurrent connections", ylabel="latency (ms)", title="POST one image")
    thr.set(xscale="log", xlabel="concurrent connections", ylabel="requests / s", title="throughput")
    for ax in (lat, thr):
        ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def saved_results(path: Path) -> dict:
    # JSON turned the concurrency levels (int keys) into strings: turn them back.
    return json.loads(path.read_text(), object_hook=lambda d: {int(k) if k.isdigit() else k: v for k, v in d.items()})


def save_results(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


def measure_models(model_dir: Path, export_dir: Path, runs: int) -> dict:
    images = sample_images()
    return {m.stem: bench_model(m, export_dir, images, runs) for m in sorted(model_dir.glob("*.json"))}


def remeasure_models(results: dict, args: argparse.Namespace, command: str) -> dict:
    """The model level of a saved run, measured again: the rest of the run stays as it was, so
    only the same CPU may do it (its figures sit beside the others in one report)."""
    now = machine()
    if history.key(now) != history.key(results["machine"]):  # model name, CPUID family and model, flags
        then, here = (", ".join(history.key(m)) for m in (results["machine"], now))
        raise SystemExit(f"results.json is of {then}; this is {here}: run the whole suite here instead")
    print("model level", flush=True)
    models = measure_models(args.model_dir, args.export_dir, args.runs)
    return {**results, "models": models, "models_run": {"date": now["date"], "command": command.strip()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=REPO / "model")
    p.add_argument("--export-dir", type=Path, default=Path.home() / ".cache" / "cifar-onnx" / "export")
    p.add_argument("--seconds", type=float, default=15, help="per load level")
    p.add_argument("--runs", type=int, default=1000, help="batch-1 timings per runtime and thread count")
    p.add_argument("--soak-requests", type=int, default=50_000)
    p.add_argument("--quick", action="store_true", help="smoke test: short levels, 2,000-request soak")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--scale-results", type=Path, help="JSON from benchmarks.scale (the container check) to report")
    p.add_argument(
        "--models-only",
        action="store_true",
        help="re-measure the model level alone (after a served file changed) into <out>/results.json, "
        "on the CPU its other figures came from, and rewrite RESULTS.md",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite RESULTS.md from <out>/results.json (adding --scale-results), measuring nothing",
    )
    args = p.parse_args(argv)
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.report_only or args.models_only:
        from benchmarks.report import write_report

        results = saved_results(args.out / "results.json")
        if args.models_only:
            results = remeasure_models(results, args, command)
        if args.scale_results:
            results["scale"] = json.loads(args.scale_results.read_text())
        if args.models_only or args.scale_results:  # --report-only alone measures and changes nothing
            save_results(results, args.out / "results.json")
        if args.models_only:
            history.update_models(results, args.out / "history.json")
        write_report(results, args.out / "RESULTS.md", history.load(args.out / "history.json"))
        print(f"wrote {args.out / 'RESULTS.md'}")
        return
    if args.quick:
        args.seconds, args.runs, args.soak_requests = 3, 100, 2000

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "settings": {k: str(v) for k, v in vars(args).items()}}
    models = sorted(args.model_dir.glob("*.json"))
    default = next((m for m in models if json.loads(m.read_text()).get("default")), models[0])
    print("model level", flush=True)
    results["models"] = measure_models(args.model_dir, args.export_dir, args.runs)
    print("service level", flush=True)
    results["service"] = service_level(args.model_dir, default.stem, args.seconds, args.soak_requests, args.runs)
    print("floor: the bare upload app", flush=True)
    results["floor"] = floor_level(args.seconds)
    print("overhead: the service's own path, and the code after an inference", flush=True)
    results["overhead"] = overhead(args.model_dir, default.stem, args.seconds)
    print("overload", flush=True)
    results["overload"] = overload(args.model_dir, args.seconds)
    print("dynamic batching", flush=True)
    results["batching"] = batching(args.model_dir, args.seconds)
    print("serving layout: workers x threads per call", flush=True)
    results["layout"] = layout_sweep(args.model_dir, args.seconds)
    print("hostile uploads", flush=True)
    results["hostile"] = hostile(args.model_dir, 5 if args.quick else 20)
    if args.scale_results:
        results["scale"] = json.loads(args.scale_results.read_text())
    has_torch_baseline = "PyTorch eager fp32" in results["models"][default.stem]
    if has_torch_baseline:
        print("baseline", flush=True)
        results["baseline"] = baseline_level(default, args.seconds)
    results["default_model"] = default.stem
    save_results(results, args.out / "results.json")
    plot(results["service"], results.get("baseline"), args.out / "latency.png")
    if results["machine"]["cpu"].endswith(MASKED_SUFFIX):  # the command that reproduces it is the masked one
        command = f"python -m benchmarks.avx2_only -- {command}"
    entries = history.record(results, f"`{command.strip()}`", args.out / "history.json")
    from benchmarks.report import write_report

    write_report(results, args.out / "RESULTS.md", entries)
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
