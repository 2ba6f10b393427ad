"""Service level: a real server process on loopback, loaded by wrk at fixed concurrency, with
the server's resident memory (its whole process tree) sampled before, during and after."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20, 1)


@dataclass
class Server:
    url: str
    pid: int
    ready_seconds: float


@contextmanager
def run_server(command: list[str], env: dict[str, str], ready_path: str, cwd: Path = REPO) -> Iterator[Server]:
    """Start `command` in `cwd` (it must listen on env PORT's value), wait for `ready_path` to answer 200."""
    port = int(env["PORT"])
    start = time.perf_counter()
    # The server's output goes to a file, never an undrained pipe: a request log filling a
    # 64 KB pipe would block the server mid-benchmark.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below, with the server)
    proc = subprocess.Popen(command, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(url + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command} exited: {log.read().decode()[-2000:]}")
            if time.perf_counter() - start > 60:
                raise RuntimeError(f"{command} not ready after 60 s")
            time.sleep(0.01)
        yield Server(url, proc.pid, round(time.perf_counter() - start, 3))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def service_command(port: int, model_dir: Path, **settings: object) -> tuple[list[str], dict[str, str]]:
    """`cifar-onnx serve` on `port`; extra settings become CIFAR_ONNX_* variables."""
    env = {"CIFAR_ONNX_PORT": str(port), "CIFAR_ONNX_MODEL_DIR": str(model_dir), "CIFAR_ONNX_LOG_LEVEL": "warning",
           "PORT": str(port), **{f"CIFAR_ONNX_{k.upper()}": str(v) for k, v in settings.items()}}  # fmt: skip
    return [sys.executable, "-m", "cifar_onnx.cli", "serve"], env


def floor_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The bare upload app (benchmarks/floor_app.py) under the service's uvicorn."""
    env = {"PORT": str(port), "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    return [sys.executable, "-m", "uvicorn", "benchmarks.floor_app:app", "--port", str(port),
            "--log-level", "warning"], env  # fmt: skip


def baseline_command(port: int, model_json: Path) -> tuple[list[str], dict[str, str]]:
    env = {"PORT": str(port), "BASELINE_MODEL": str(model_json), "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    return [sys.executable, str(HERE / "baseline_app.py")], env


@dataclass
class MemorySampler:
    """Samples a process tree's RSS every `interval` seconds in a background thread."""

    pid: int
    interval: float = 2.0
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(tree_rss_mb(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wrk(url: str, image: Path, connections: int, seconds: float, field_name: str = "file", copies: int = 1,
        threads: int = 1) -> dict:  # fmt: skip
    """One wrk run; returns its JSON summary (requests, p50/p95/p99 ms, error counts) plus rps."""
    env = {**os.environ, "WRK_IMAGE": str(image), "WRK_FIELD": field_name, "WRK_COPIES": str(copies)}
    command = ["wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(HERE / "wrk_upload.lua"), url]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    summary["rps"] = round(summary["requests"] / summary["seconds"], 1)
    summary["errors"] = sum(v for k, v in summary.items() if k.startswith("errors_"))
    summary["socket_errors"] = sum(summary[f"errors_{k}"] for k in ("connect", "read", "write", "timeout"))
    summary["accepted"] = summary["requests"] - summary["errors_status"]
    return summary


@dataclass
class HealthPoller:
    """Polls a URL every `interval` seconds in a background thread; counts answers that were not 200."""

    url: str
    interval: float = 0.25
    checks: int = 0
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> HealthPoller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.checks += 1
            try:
                self.failures += httpx.get(self.url, timeout=5).status_code != 200
            except httpx.HTTPError:
                self.failures += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_idle(url: str, timeout: float = 60) -> None:
    """Until the server has no request in flight (its /metrics gauge; requests that wait inside a
    batcher count too), so that a level does not start while the last one's requests still drain."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics", timeout=5).text
        busy = [line for line in text.splitlines() if line.startswith("cifar_onnx_requests_in_flight ")]
        if not busy or float(busy[0].split()[1]) == 0:
            return
        time.sleep(0.2)


def inference_totals(url: str, model: str) -> tuple[float, int]:
    """The server's own batch-1 ONNX Runtime time for `model` so far: (seconds in all, calls), from
    its /metrics histogram. Two readings around a level give that level's mean inference time,
    measured in the same process and at the same moment as its HTTP latency."""
    text = httpx.get(url + "/metrics", timeout=5).text
    totals = {}
    for line in text.splitlines():
        for part in ("sum", "count"):
            prefix = f"cifar_onnx_inference_seconds_{part}{{"
            if line.startswith(prefix) and f'model="{model}"' in line and 'batch="1"' in line:
                totals[part] = float(line.rsplit(" ", 1)[1])
    return totals.get("sum", 0.0), int(totals.get("count", 0))


def check_answer(url: str, image: Path, field_name: str = "file") -> None:
    """The endpoint must really classify before we time it (a fast 4xx is not a result)."""
    response = httpx.post(url, files={field_name: (image.name, image.read_bytes(), "image/jpeg")}, timeout=30)
    response.raise_for_status()
