"""Overload: one server process at 64, 128 and 256 connections, with the default queue bound
(shedding) and with no bound, so the two can be compared side by side.

    python -m benchmarks.overload --seconds 15      # also part of python -m benchmarks.run

For each run: p50/p99 of all answers (200 and 503 alike) and of the accepted ones, accepted (2xx)
and shed (503) counts, socket errors and timeouts, and /health/ready polled four times a second
during and after. The load is benchmarks/flood.py, not wrk (its docstring says why).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx

from benchmarks import load
from benchmarks.flood import flood
from cifar_onnx.settings import Settings

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "tests" / "data" / "cifar" / "ship.jpg"
LEVELS = (64, 128, 256)
UNBOUNDED = 1_000_000


def overload(model_dir: Path, seconds: float, queues: dict[str, int] | None = None) -> dict:
    queues = queues or {"shedding, default bound": Settings().max_queue, "shedding, larger bound": 64,
                        "unbounded": UNBOUNDED}  # fmt: skip
    out: dict = {}
    for label, max_queue in queues.items():
        # The unbounded server admits by count alone (the longest wait the settings allow), as it
        # did before admission by time: the comparison shows what each bound buys.
        wait = {"max_wait_ms": 60_000} if max_queue == UNBOUNDED else {}
        command, env = load.service_command(load.free_port(), model_dir, max_queue=max_queue, **wait)
        with load.run_server(command, env, "/health/ready") as server:
            url = server.url + "/api/v1/predict"
            load.check_answer(url, SAMPLE)
            runs = {}
            for connections in LEVELS:
                load.wait_idle(server.url)
                with load.HealthPoller(server.url + "/health/ready") as health:
                    run = flood(url, SAMPLE, connections, seconds)
                run["health_checks"], run["health_not_200"] = health.checks, health.failures
                runs[connections] = run
                print(f"  {label} (max_queue {max_queue}) c={connections}: p50 {run['p50_ms']:.0f} ms, "
                      f"p99 {run['p99_ms']:.0f} ms, accepted {run['accepted']} (p99 {run['accepted_latency']['p99_ms']} ms), "
                      f"shed {run['shed_503']}, "
                      f"socket errors {run['socket_errors']}, health not 200: {health.failures}/{health.checks}",
                      flush=True)  # fmt: skip
            out[label] = {"max_queue": max_queue, "levels": runs,
                          "ready_after": httpx.get(server.url + "/health/ready", timeout=5).status_code}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=HERE.parent / "model")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--queue", type=int, action="append", help="try these bounds instead (repeatable)")
    args = p.parse_args(argv)
    queues = {f"max_queue={q}": q for q in args.queue} if args.queue else None
    print(json.dumps(overload(args.model_dir, args.seconds, queues), indent=1))


if __name__ == "__main__":
    main()
