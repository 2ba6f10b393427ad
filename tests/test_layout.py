"""The serving layout: logged at start with where it came from, overridable, and the probe's choices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.layout import best, candidates
from benchmarks.load import free_port
from tests.conftest import REPO
from tests.tiny_model import write_tiny_model


def _layout_line(tmp_path: Path, **settings: str) -> str:
    """Start the real `cifar-onnx serve` and read its log until the layout line (then stop it)."""
    write_tiny_model(tmp_path, "cifar10", default=True)
    env = {**os.environ, "CIFAR_ONNX_MODEL_DIR": str(tmp_path), "CIFAR_ONNX_PORT": str(free_port()), **settings,
           "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}  # fmt: skip
    with subprocess.Popen([sys.executable, "-m", "cifar_onnx.cli", "serve"], env=env, stderr=subprocess.STDOUT,
                          stdout=subprocess.PIPE, text=True) as server:  # fmt: skip
        try:
            for line in server.stdout:  # the log is line-buffered; the line comes before "ready"
                if "serving layout:" in line:
                    return line
            raise AssertionError("the server stopped without logging its layout")
        finally:
            server.kill()


def test_the_start_log_says_the_layout_and_why(tmp_path: Path) -> None:
    line = _layout_line(tmp_path)
    assert "1 ONNX Runtime thread(s) per call" in line and "the default for" in line
    assert "python -m benchmarks.layout" in line


def test_the_layout_is_overridden_by_its_settings_and_says_so(tmp_path: Path) -> None:
    line = _layout_line(tmp_path, CIFAR_ONNX_INFERENCE_WORKERS="1", CIFAR_ONNX_INTRA_OP_THREADS="2")
    assert "1 inference worker(s), 2 ONNX Runtime thread(s) per call" in line
    assert "set by CIFAR_ONNX_INFERENCE_WORKERS, CIFAR_ONNX_INTRA_OP_THREADS" in line


def test_the_probe_tries_every_split_of_the_cpus_and_picks_the_most_requests() -> None:
    assert [(v["inference_workers"], v["intra_op_threads"]) for v in candidates(4).values()] == [(4, 1), (2, 2), (1, 4)]
    runs = {"a": {1: {"p50_ms": 8.0}, 32: {"rps": 300.0}}, "b": {1: {"p50_ms": 4.0}, 32: {"rps": 300.0}},
            "c": {1: {"p50_ms": 2.0}, 32: {"rps": 250.0}}}  # fmt: skip
    assert best(runs) == "b"
