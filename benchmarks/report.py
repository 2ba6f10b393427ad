"""benchmarks/RESULTS.md from the suite's results: tables, ratios to the baseline, targets."""

from __future__ import annotations

from pathlib import Path


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _x(value: float, reference: float | None) -> str:
    return f" ({reference / value:.1f}x)" if reference and value else ""


def against_section() -> list[str]:
    """The `python -m benchmarks.against` runs kept in benchmarks/against*.json (one per CPU it was
    run on, oldest first), if there are any."""
    import json

    from benchmarks.against import table

    runs = [json.loads(f.read_text()) for f in Path(__file__).resolve().parent.glob("against*.json")]
    if not runs:
        return []
    lines = ["## Against an earlier revision", "",
             "`python -m benchmarks.against REV`: the service as it was at a git revision (its code and its model "
             "files, unpacked with `git archive`) and this checkout, taking turns on the same machine in one run. "
             "Each model's batch-1 median as that revision's own registry loads it for serving (1 thread), and "
             "forced unfused; the default model over HTTP, one image a request (wrk). Each run's machine and date "
             "are in its first line: they are not re-run by `benchmarks.run`.", ""]  # fmt: skip
    for run in sorted(runs, key=lambda r: r["machine"]["date"]):
        lines += [table(run), ""]
    return lines


def cpu_table(history: list[dict]) -> list[str]:
    """RESULTS.md's per-CPU section from benchmarks/history.json's entries (none: no section)."""
    from benchmarks.common import cpu_label

    if not history:
        return []
    lines = ["## Per CPU: what is fast where", "",
             "The latest run of the suite on each CPU the project has run on (`benchmarks/history.json`; "
             "each run replaces its own CPU's row). Model files are those of the run's commit, so a model "
             "that was retrained since differs between rows. Batch 1, 1 thread, median; HTTP figures are "
             "the default model's, one image a request; overhead = HTTP p50 at concurrency 1 minus the "
             "model's own median (HTTP, decoding, queueing, JSON; the median taken in a fresh process right after "
             "that level, in rows before 2026-12-05 19:30 UTC by the model level minutes earlier), and in brackets "
             "minus the server's own mean "
             "inference time during that level (its /metrics; same process, same moment). Where measured, that "
             "last overhead as a multiple of the floor: the HTTP p50 of a bare Litestar app that parses the same "
             "upload and decodes it, under the same uvicorn, in the same run (`benchmarks/floor_app.py`).", ""]  # fmt: skip
    rows = []
    for e in history:
        in_server = e.get("http_overhead_in_server_ms")
        overhead = f"{e['http_overhead_ms']}" + (f" ({in_server})" if in_server is not None else "")
        if e.get("overhead_to_floor") is not None:
            overhead += f"; {e['overhead_to_floor']}x the floor's {e['floor_p50_ms']}"
        http = [e["http_c1_p50_ms"], overhead, e["http_c32_rps"], e["http_c32_p99_ms"]]
        for name, m in e["models"].items():
            default = name == e["default_model"]
            when = e["date"] + (f" (models measured again {e['models_date']})" if "models_date" in e else "")
            rows.append([f"{cpu_label(e)}, {when}", f"`{name}`" + (" (default)" if default else ""),
                         m["int8_mode"], m["batch1_ms"], *(http if default else ["", "", "", ""])])  # fmt: skip
    header = ["CPU (flags), date", "model", "int8 kernels", "batch 1 ms", "HTTP c=1 p50 ms", "overhead ms",
              "HTTP c=32 req/s", "HTTP c=32 p99 ms"]  # fmt: skip
    return [*lines, *_table(header, rows), ""]


def _header(results: dict) -> list[str]:
    m = results["machine"]
    return ["# Benchmark results", "",
            f"Written by `python -m benchmarks.run` on {m['date']}. Machine: {m['cpu']}, {m['cores']} cores, "
            f"{m['memory_gb']} GiB, {m['os']}; Python {m['python']}, onnxruntime {m['onnxruntime']}"
            + (f", torch {m['torch']}" if "torch" in m else "") + ". Shared cloud machine: figures vary run to run "
            "by 10-20%.", ""]  # fmt: skip


# PyTorch eager rebuilt from the metadata where the training checkpoints are absent (a fresh clone).
UNTRAINED = " (same architecture untrained: no checkpoints here)"


def _models(results: dict) -> list[str]:
    lines = ["## Model level", "",
             "Same model, same inputs (the test samples, decoded), one process each. Batch-1 latency over "
             f"{results['settings']['runs']} calls after warm-up; throughput at batch 64; cold start = fresh "
             "process spawn (interpreter start), imports, model load, first prediction and exit, timed from "
             "outside, best of 3; peak RSS (VmHWM) of that process.", ""]  # fmt: skip
    if "models_run" in results:  # a served file changed after the suite ran: this level alone was re-run
        run = results["models_run"]
        lines += [f"Measured again on {run['date']} by `{run['command']}`, on the same CPU, after a served file "
                  "changed; the other sections are from the run in the first line.", ""]  # fmt: skip
    for name, runtimes in results["models"].items():
        torch_ms = runtimes.get("PyTorch eager fp32", {}).get("batch1_1t", {}).get("median_ms")
        rows = []
        for label, r in runtimes.items():
            b1, b2 = r["batch1_1t"], r["batch1_2t"]
            shown = label + (UNTRAINED if r.get("trained") is False else "")
            rows.append([shown, f"{b1['median_ms']}{_x(b1['median_ms'], torch_ms)}", b1["p95_ms"], b1["p99_ms"],
                         b2["median_ms"], r["batch64_1t_images_per_s"], r["batch64_2t_images_per_s"],
                         r["cold_start_s"], r["peak_rss_mb"]])  # fmt: skip
        lines += [f"### `{name}`", ""]
        lines += _table(["runtime", "batch 1, 1 thread: median ms (x faster than PyTorch)", "p95 ms", "p99 ms",
                         "batch 1, 2 threads: median ms", "batch 64, 1 thread: img/s", "batch 64, 2 threads: img/s",
                         "cold start s", "peak RSS MB"], rows)  # fmt: skip
        lines.append("")
    return lines


def _trained(results: dict) -> bool:
    return results["models"][results["default_model"]].get("PyTorch eager fp32", {}).get("trained", True)


def _service(results: dict) -> list[str]:
    service, base = results["service"], results.get("baseline")
    lines = ["## Service level", "",
             "The real server (`cifar-onnx serve`: uvicorn, 1 worker, ORT int8 with 1 intra-op thread per call, "
             "2 inference threads) on loopback, loaded by `wrk` (closed loop: each connection sends its next "
             f"request when the last is answered) for {results['settings']['seconds']} s per level, POSTing a "
             "CIFAR-10 test JPEG as multipart. Client and server share the same 2 cores."
             + (" Baseline: the same model in PyTorch eager inside Flask (`benchmarks/baseline_app.py`), "
                "measured in the same run; ratios are ours against it." if base else "")
             + (" Its networks are untrained (the training checkpoints are not on this machine): the same "
                "computation, so the same speed." if base and not _trained(results) else ""), ""]  # fmt: skip
    rows = []
    for c, r in service["single"].items():
        b = base["single"].get(c) if base else None
        ratio = f" ({r['rps'] / b['rps']:.1f}x)" if b and b["rps"] else ""
        if b and not b["requests"]:  # nothing answered within the level: say so, not "0 errors"
            b = {**b, "p50_ms": "none answered", "p99_ms": "-", "errors": "all"}
        rows.append([c, r["p50_ms"], r["p95_ms"], r["p99_ms"], f"{r['rps']}{ratio}", r["errors"],
                     *( [b["p50_ms"], b["p99_ms"], b["rps"], b["errors"]] if b else [])])  # fmt: skip
    header = ["concurrency", "p50 ms", "p95 ms", "p99 ms", "requests/s (x baseline)", "errors"]
    if base:
        header += ["baseline p50 ms", "baseline p99 ms", "baseline requests/s", "baseline errors"]
    lines += ["### `POST /api/v1/predict` (one image)", "", *_table(header, rows), "",
              "Concurrency past the queue bound (`CIFAR_ONNX_MAX_QUEUE` plus the inference workers) is shed "
              "and measured in the overload section below.", "",
              "![latency and throughput against concurrency](latency.png)", ""]  # fmt: skip
    rows = [[c, r["p50_ms"], r["p95_ms"], r["p99_ms"], r["rps"], round(8 * r["rps"], 1), r["errors"]]
            for c, r in service["batch8"].items()]  # fmt: skip
    lines += ["### `POST /api/v1/predict/batch` (8 images a request)", "",
              *_table(["concurrency", "p50 ms", "p95 ms", "p99 ms", "requests/s", "images/s", "errors"], rows), ""]  # fmt: skip
    return lines + _explain(service) + _soak(service, base)


def _explain(service: dict) -> list[str]:
    explain, c1 = service.get("explain"), service["single"][1]
    if not explain:
        return []
    return ["### `POST /api/v1/explain` against `POST /api/v1/predict` (default model, concurrency 1)", "",
            "Explain runs the model on 17 images (the photo and 16 with one patch covered), split over two "
            "ONNX Runtime calls, and encodes a 256x256 PNG.", "",
            *_table(["route", "p50 ms", "p99 ms", "requests/s", "errors"],
                    [["predict", c1["p50_ms"], c1["p99_ms"], c1["rps"], c1["errors"]],
                     ["explain", explain["p50_ms"], explain["p99_ms"], explain["rps"], explain["errors"]]]),
            "", f"Explain costs {explain['p50_ms'] / c1['p50_ms']:.1f}x a predict call at the median "
            "(target: within 10x).", ""]  # fmt: skip


def _soak(service: dict, base: dict | None) -> list[str]:
    soak = service["soak"]
    growth = soak["rss_end_mb"] - soak["rss_start_mb"]
    return ["### Soak and memory", "",
            f"- Soak: {soak['requests']:,} requests at concurrency 32 in {soak['seconds']:.0f} s "
            f"({soak['rps']} requests/s), {soak['errors']} errors, p50 {soak['p50_ms']} ms, p99 {soak['p99_ms']} ms.",
            f"- Server RSS (process tree): idle {service['rss_idle_mb']} MB, after the load levels "
            f"{service['rss_after_levels_mb']} MB; during the soak {soak['rss_start_mb']} MB at the first sample and "
            f"{soak['rss_end_mb']} MB at the last ({growth:+.1f} MB; min {min(soak['rss_samples_mb'] or [0])}, "
            f"max {max(soak['rss_samples_mb'] or [0])}); after it {service['rss_after_soak_mb']} MB.",
            f"- Cold start to ready (process start until `/health/ready` answers 200, model loaded and warmed up): "
            f"{', '.join(f'{s:.2f}' for s in service['cold_start_s'])} s.",
            *( [f"- Baseline RSS: idle {base['rss_idle_mb']} MB, after load {base['rss_after_mb']} MB; "
                f"ready after {base['ready_s']:.2f} s."] if base else []), ""]  # fmt: skip


def _targets(results: dict) -> list[str]:
    service = results["service"]
    soak = service["soak"]
    int8 = results["models"][results["default_model"]]["ORT int8"]["batch1_1t"]["median_ms"]
    # The PyTorch runtime needs the members' training checkpoints; when the default's are not on
    # this machine, the ratio is shown for a served model whose checkpoints are.
    compared = next((n for n in [results["default_model"], *results["models"]]
                     if "PyTorch eager fp32" in results["models"][n]), None)  # fmt: skip
    ratio = None
    if compared:
        pair = results["models"][compared]
        ratio = pair["PyTorch eager fp32"]["batch1_1t"]["median_ms"] / pair["ORT int8"]["batch1_1t"]["median_ms"]
    c1, c32 = service["single"][1], service["single"][32]
    targets = [
        ("int8 model, batch 1, 1 thread: median", "<= 5 ms", f"{int8} ms", int8 <= 5),
        ("... against PyTorch eager, same model", ">= 3x faster",
         f"{ratio:.1f}x" + ("" if compared == results["default_model"] else f" (`{compared}`)") if ratio else "n/a",
         bool(ratio) and ratio >= 3),
        ("HTTP single image, concurrency 1: p50", "<= 8 ms", f"{c1['p50_ms']} ms", c1["p50_ms"] <= 8),
        ("HTTP single image, concurrency 32", ">= 200 req/s, 0 errors", f"{c32['rps']} req/s, {c32['errors']} errors",
         c32["rps"] >= 200 and c32["errors"] == 0),
        ("server RSS", "< 200 MB", f"{service['rss_after_soak_mb']} MB", service["rss_after_soak_mb"] < 200),
        ("soak at concurrency 32", ">= 50,000 requests, 0 errors", f"{soak['requests']:,}, {soak['errors']} errors",
         soak["requests"] >= 50_000 and soak["errors"] == 0),
        ("cold start to ready", "< 2 s", f"{min(service['cold_start_s']):.2f} s", min(service["cold_start_s"]) < 2),
    ]  # fmt: skip
    return ["## Targets", "",
            *_table(["what", "target", "measured", "met"], [[w, t, v, "yes" if ok else "**no**"] for w, t, v, ok in targets]),
            ""]  # fmt: skip


def _hand_off(overhead: dict) -> list[str]:
    if "hand_off" not in overhead:  # runs before it was measured
        return []
    return [f"- One hand-off from the event loop to a worker thread and back, nothing run in it: "
            f"{overhead['hand_off']['median_us']} µs (median of {overhead['hand_off']['runs']:,}). A small upload that "
            "finds its model idle makes one (decoded on the inference worker); otherwise a request makes two "
            "(decoding beside inference, so that under load a worker never waits for a decode)."]  # fmt: skip


def _overhead(results: dict) -> list[str]:
    """What the service adds to a request besides the model, and what limits it (benchmarks/overhead.py)."""
    if "overhead" not in results:
        return []
    path, after = results["overhead"]["service_path"], results["overhead"]["after_inference"]
    rows = [[name, s["alone_us"], s["after_inference_us"], f"{s['after_inference_us'] / s['alone_us']:.1f}x"]
            for name, s in after["stages"].items()]  # fmt: skip
    return ["## Where the overhead goes", "",
            f"- The service's own path: serving a near-free model (a tiny ONNX graph) its p50 at one connection "
            f"is {path['service_p50_ms']} ms against the floor's {path['floor_p50_ms']} ms, **{path['ratio']}x** "
            f"(medians of {len(path['rounds']['floor'])} rounds taken in turns): middleware, admission, the hand-off "
            "to a worker thread where there is one (a light request alone on one connection has none), the answer "
            "and its JSON.",
            *_hand_off(results["overhead"]),
            f"- After an inference: our own steps timed in-process alone and right after one call of `{after['model']}` "
            f"({after['inference_us'] / 1000:.2f} ms), as they run in the server. Where they run slower after it, the "
            "difference is the CPU (caches, and on CPUs with AMX or AVX-512 the clock the vector units leave), "
            "counted in the overhead above but not removable by the service's code.", "",
            *_table(["step", "alone µs", "right after an inference µs", "slower"], rows), "",
            "What was taken out of the request path, and the profiles behind it: docs/HISTORY.md, "
            "[the request path trimmed](../docs/HISTORY.md#the-request-path-trimmed-and-the-long-vgg16-bn-schedule-resumed-2026-12-06), "
            "[one hand-off for small uploads](../docs/HISTORY.md#one-hand-off-for-small-uploads-2026-12-06-night) "
            "and [the overhead in CPU time](../docs/HISTORY.md#memory-a-lone-request-on-every-core-and-the-overhead-measured-in-cpu-time-2026-12-06-late): "
            "the remaining hand-off is mostly the wake-up of the idle core the worker sleeps on, and a request alone "
            "in a quiet service runs the default model on every core, [from the event loop itself](../docs/HISTORY.md"
            "#a-request-on-the-event-loop-the-self-check-halved-the-heap-trimmed-gelu-in-one-operator-2026-12-07) "
            "while one connection sends the requests.",
            ""]  # fmt: skip


def _overload(results: dict) -> list[str]:
    if "overload" not in results:
        return []
    lines = ["## Overload: shedding against an unbounded queue", "",
             "One server process, default model, `benchmarks/flood.py` (closed loop: each connection sends "
             "its next upload when the last answer arrives, like wrk, but timing every answer; wrk's "
             "percentiles are wrong when most answers are fast refusals, see its docstring) at 64, 128 and "
             f"256 connections for {results['settings']['seconds']} s each, on the same 2 cores as the server. "
             "p50/p99 are of all answers (200 and 503 alike); the accepted answers' own p99 is beside them. "
             "`/health/ready` was polled 4 times a second during each level.", ""]  # fmt: skip
    rows = []
    for label, run in results["overload"].items():
        for c, r in run["levels"].items():
            accepted_p99 = r.get("accepted_latency", {}).get("p99_ms")
            rows.append([f"{label} (max_queue {run['max_queue']:,})", c, r["p50_ms"], r["p99_ms"], r["accepted"],
                         accepted_p99, r["shed_503"], r["socket_errors"],
                         f"{r['health_not_200']}/{r['health_checks']}"])  # fmt: skip
    header = ["server", "connections", "p50 ms", "p99 ms", "answered 200", "200s' p99 ms", "shed (503)",
              "socket errors", "/health/ready not 200"]  # fmt: skip
    return [*lines, *_table(header, rows), ""]


def _scale(results: dict) -> list[str]:
    if "scale" not in results:
        return []
    scale = results["scale"]
    kill = scale["kill"]
    lines = ["## Scale-out: the compose `scale` profile (3 replicas behind nginx)", "",
             "Run by `.ci/container-check.sh` (`python -m benchmarks.scale`) on the same machine: every "
             "container shares its 2 cores, so more replicas cannot add throughput here; what the profile "
             "shows is that the proxy spreads load and survives a replica's death.", "",
             f"- Load through the proxy, predictions answered per replica (its own `/metrics`): "
             f"{', '.join(f'{k}: {v:.0f}' for k, v in scale['spread']['per_replica'].items())}.",
             f"- One replica SIGKILLed under load (wrk, 8 connections): {kill['load']['requests']:,} requests, "
             f"**{kill['failed']} failed**; the replica was restarted by its restart policy "
             f"({kill['victim_restarts']}x) and all three were healthy again {kill['load']['recovered_in_s']} s "
             "after the kill.", ""]  # fmt: skip
    if "replicas" in scale:
        rows = [[n, r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]] for n, r in scale["replicas"].items()]
        lines += [*_table(["replicas", "requests/s (c=16)", "p50 ms", "p99 ms", "errors"], rows), ""]
    return lines


def _batching(results: dict) -> list[str]:
    if "batching" not in results:
        return []
    sweep = results["batching"]
    lines = ["## Dynamic batching: `CIFAR_ONNX_MAX_BATCH`", "",
             "`benchmarks/batching.py`: one server per setting, default model, one image a request (wrk, "
             f"{results['settings']['seconds']} s a level); images per ONNX Runtime call from the server's "
             f"`/metrics` over the concurrency-32 level. The shipped default is {sweep['default_max_batch']}; "
             "1 is the service without batching.", ""]  # fmt: skip
    rows = [[m, r[1]["p50_ms"], r[1]["rps"], r[32]["p50_ms"], r[32]["p99_ms"], r[32]["rps"], r[32]["errors"],
             r[32]["images_per_call"]] for m, r in sweep["runs"].items()]  # fmt: skip
    header = ["max_batch", "c=1 p50 ms", "c=1 req/s", "c=32 p50 ms", "c=32 p99 ms", "c=32 req/s", "c=32 errors",
              "c=32 images per call"]  # fmt: skip
    return [*lines, *_table(header, rows), ""]


def _layout(results: dict) -> list[str]:
    if "layout" not in results:
        return []
    found = results["layout"]
    rows = [[label, r[1]["p50_ms"], r[1]["p99_ms"], r[32]["rps"], r[32]["p50_ms"], r[32]["p99_ms"], r[32]["errors"]]
            for label, r in found["runs"].items()]  # fmt: skip
    return ["## Serving layout: inference workers x threads per call", "",
            f"`benchmarks/layout.py`: one server per way of splitting the {found['cpus']} usable CPUs, default model, "
            f"one image a request (wrk, {results['settings']['seconds']} s a level). The service runs one "
            "single-threaded call per CPU unless `CIFAR_ONNX_INFERENCE_WORKERS` and `CIFAR_ONNX_INTRA_OP_THREADS` "
            f"say otherwise; the most requests a second at 32 connections here: **{found['best']}**.", "",
            *_table(["layout", "c=1 p50 ms", "c=1 p99 ms", "c=32 req/s", "c=32 p50 ms", "c=32 p99 ms", "c=32 errors"],
                    rows), "",
            *([f"The default's members at batch 1 (1 thread each, median): one after another "
               f"{found['ensemble']['one after another']} ms, side by side (ONNX Runtime's parallel mode) "
               f"{found['ensemble']['side by side']} ms. The service runs them one after another.", ""]
              if "ensemble" in found else [])]  # fmt: skip


def _hostile(results: dict) -> list[str]:
    if "hostile" not in results:
        return []
    return ["## Hostile uploads: server CPU per refusal", "",
            "`benchmarks/hostile.py`: each kind sent 20 times to one server process with the default settings; "
            "the server's own user + system CPU time per request (target: every refusal under 50 ms).", "",
            *_table(["upload", "status", "server CPU ms each"],
                    [[k, ", ".join(map(str, v["status"])), v["server_cpu_ms"]] for k, v in results["hostile"].items()]),
            ""]  # fmt: skip


def write_report(results: dict, path: Path, history: list[dict] | None = None) -> None:
    """RESULTS.md, section by section in the order a reader needs them."""
    lines = [*_header(results), *_models(results), *_service(results), *_overhead(results), *_overload(results), *_scale(results),
             *_batching(results), *_layout(results), *against_section(), *cpu_table(history or []), *_hostile(results), *_targets(results)]  # fmt: skip
    path.write_text("\n".join(lines))
