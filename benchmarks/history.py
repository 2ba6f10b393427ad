"""What is fast where: one summary line per CPU the suite has run on, kept in
`benchmarks/history.json` and shown as RESULTS.md's per-CPU table.

`python -m benchmarks.run` replaces the entry of the CPU it ran on (same model name, CPUID
family and model, and flags) with its own; entries of other CPUs stay as they were measured. The first entries were taken
from the suite's results.json of earlier commits (each entry names its commit).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
HISTORY = HERE / "history.json"


def model_figures(results: dict) -> dict:
    """Each served model's int8 kernels and batch-1 median, from the suite's model level."""
    return {name: {"int8_mode": runs["ORT int8"].get("int8_mode", "not recorded"),
                   "batch1_ms": runs["ORT int8"]["batch1_1t"]["median_ms"]}
            for name, runs in results["models"].items()}  # fmt: skip


def summary(results: dict, source: str) -> dict:
    """The few figures that differ between CPUs, from one run of the suite."""
    machine, service = results["machine"], results["service"]
    default = results["default_model"]
    models = model_figures(results)
    c1, c32 = service["single"][1], service["single"][32]
    # The model's median measured right after the concurrency-1 level where the run has it, else
    # the model level's (minutes earlier: the machine's drift between the two lands in the overhead).
    model_ms = c1.get("model_median_after_ms", models[default]["batch1_ms"])
    in_server = round(c1["p50_ms"] - c1["server_inference_mean_ms"], 2) if "server_inference_mean_ms" in c1 else None
    return {
        "cpu": machine["cpu"],
        "cpu_flags": machine.get("cpu_flags", "not recorded"),
        "cpu_generation": machine.get("cpu_generation", "not recorded"),
        "date": machine["date"],
        "source": source,
        "default_model": default,
        "models": models,
        "http_c1_p50_ms": c1["p50_ms"],
        # The service's own cost: HTTP, multipart parsing, decoding, queueing, JSON.
        "http_overhead_ms": round(c1["p50_ms"] - model_ms, 2),
        # The same, against the server's own mean inference time during that level (its /metrics): one
        # process at one moment, where the line above compares two processes run minutes apart.
        "http_overhead_in_server_ms": in_server,
        # The overhead against the floor (a bare app's p50 parsing and decoding the same upload, same run).
        "floor_p50_ms": results.get("floor", {}).get("single", {}).get(1, {}).get("p50_ms"),
        "overhead_to_floor": round(in_server / results["floor"]["single"][1]["p50_ms"], 2)
        if in_server is not None and "floor" in results
        else None,
        "http_c32_rps": c32["rps"],
        "http_c32_p99_ms": c32["p99_ms"],
    }


def load(path: Path = HISTORY) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def key(entry: dict) -> tuple[str, str, str]:
    """Which CPU an entry is of; entries written before the CPUID family was recorded stay apart."""
    return entry["cpu"], entry.get("cpu_generation", "not recorded"), entry["cpu_flags"]


def record(results: dict, source: str, path: Path = HISTORY) -> list[dict]:
    """Put this run's summary in place of the same CPU's previous one; returns the history."""
    entry = summary(results, source)
    entries = [e for e in load(path) if key(e) != key(entry)]
    entries.append(entry)
    path.write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def update_models(results: dict, path: Path = HISTORY) -> None:
    """After `--models-only`: this CPU's entry takes the model level measured again (and says when);
    its HTTP figures stay the whole run's. Nothing is written where this CPU has no entry yet."""
    entries = load(path)
    found = [e for e in entries if key(e) == key(results["machine"])]
    for entry in found:
        entry["models"], entry["models_date"] = model_figures(results), results["models_run"]["date"]
    if found:
        path.write_text(json.dumps(entries, indent=1) + "\n")
