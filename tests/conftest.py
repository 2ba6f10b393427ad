"""Shared fixtures: the served model folder, settings and a TestClient on the real app."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from litestar.testing import TestClient

from cifar_onnx.app import create_app
from cifar_onnx.settings import Settings
from tests.tiny_model import write_tiny_model

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "model"
HAS_SHIPPED = (SHIPPED / "cifar10.onnx").exists()


def served_vgg() -> Path:
    """The served graph that is a single VGG16-BN (training starts from it; whatever its name)."""
    for meta in sorted(SHIPPED.glob("*.json")):
        members = json.loads(meta.read_text()).get("members", [])
        if [m["name"] for m in members] == ["vgg16_bn"]:
            return meta.with_suffix(".onnx")
    raise FileNotFoundError("no single VGG16-BN among the served models")


def dataset_dir() -> Path | None:
    """The CIFAR-10 image folder, if this machine has it (CIFAR10_DIR or ../shared/data/cifar10)."""
    for candidate in (os.environ.get("CIFAR10_DIR"), REPO.parent / "shared" / "data" / "cifar10"):
        if candidate and (Path(candidate) / "test").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped models when present; before the first trained model lands, a small real
    ONNX model built here with the same contract."""
    if HAS_SHIPPED:
        return SHIPPED
    folder = tmp_path_factory.mktemp("models")
    write_tiny_model(folder, "cifar10", default=True)
    return folder


@pytest.fixture(scope="session")
def two_models(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """The served models plus an extra small one, to test choosing among several."""
    folder = tmp_path_factory.mktemp("two")
    for path in model_dir.glob("*.onnx"):
        shutil.copy(path, folder)
        shutil.copy(path.with_suffix(".json"), folder)
    write_tiny_model(folder, "extra")
    return folder


def make_client(model_dir: Path, **overrides: object) -> TestClient:
    settings = Settings.from_env(environ={}, model_dir=model_dir, **overrides)
    return TestClient(app=create_app(settings, wait_for_models=True))


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    with make_client(model_dir, max_upload_bytes=2 * 1024 * 1024, max_batch_files=8) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving_in_thread(app: object, seconds: float = 30.0) -> Iterator[str]:
    """The app under a real uvicorn in a thread on a free loopback port; its URL once started
    (bounded: a server that never starts fails the test instead of hanging it)."""
    server = uvicorn.Server(uvicorn.Config(app, port=free_port(), log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + seconds
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the server did not start in {seconds:.0f} s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def start_server(model_dir: Path) -> tuple[subprocess.Popen, str]:
    """`cifar-onnx serve` (uvicorn) in a subprocess on a free loopback port, once it is ready."""
    port = free_port()
    env = {**os.environ, "CIFAR_ONNX_MODEL_DIR": str(model_dir), "CIFAR_ONNX_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "cifar_onnx.cli", "serve", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not become ready in 15 s")


@pytest.fixture(scope="session")
def server(model_dir: Path) -> Iterator[str]:
    """The real server as shipped, on loopback."""
    proc, url = start_server(model_dir)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
