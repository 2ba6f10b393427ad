"""What a hostile or careless upload costs the server: CPU time per refusal, by kind, measured on
the server process itself (its user + system CPU time before and after the requests).

    python -m benchmarks.hostile          # part of python -m benchmarks.run

The target: every refusal below 50 ms of server CPU. The worst accepted upload (an
RGBA PNG just under the pixel limit) is measured beside them for scale.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from benchmarks import load
from cifar_onnx.settings import Settings
from tests.images import png_claiming_huge_size

REPO = Path(__file__).resolve().parent.parent


def worst_accepted(max_pixels: int) -> bytes:
    side = int(max_pixels**0.5) - 1
    pixels = np.zeros((side, side, 4), dtype=np.uint8)
    pixels[::7, ::5] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG")
    return buffer.getvalue()


def uploads(settings: Settings) -> dict[str, tuple[str, list[tuple[str, tuple[str, bytes, str]]]]]:
    """Kind -> (route, multipart files)."""
    jpeg = (REPO / "tests" / "data" / "cifar" / "cat.jpg").read_bytes()
    big = b"\xff\xd8\xff" + bytes(settings.max_upload_bytes + 1)
    return {
        "header claims 100000x100000 (422)": ("predict", [("file", ("bomb.png", png_claiming_huge_size(100_000, 100_000), "image/png"))]),
        "just over the pixel limit (422)": ("predict", [("file", ("big.png", png_claiming_huge_size(3500, 3500), "image/png"))]),
        "not an image (415)": ("predict", [("file", ("notes.txt", b"hello " * 100, "text/plain"))]),
        "truncated JPEG (422)": ("predict", [("file", ("cut.jpg", jpeg[: len(jpeg) // 3], "image/jpeg"))]),
        "one file over the size limit in a batch (413)": (
            "predict/batch", [("files", ("a.jpg", jpeg, "image/jpeg")), ("files", ("b.jpg", big, "image/jpeg"))]),
        "accepted: RGBA PNG just under the pixel limit (200)": (
            "predict", [("file", ("worst.png", worst_accepted(settings.max_pixels), "image/png"))]),
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def hostile(model_dir: Path, repeats: int = 20) -> dict[str, dict[str, object]]:
    settings = Settings.from_env(environ={})
    out: dict[str, dict[str, object]] = {}
    command, env = load.service_command(load.free_port(), model_dir)
    with load.run_server(command, env, "/health/ready") as server, httpx.Client(timeout=60) as client:
        for kind, (route, files) in uploads(settings).items():
            client.post(f"{server.url}/api/v1/{route}", files=files)  # warm the path once
            before = cpu_seconds(server.pid)
            statuses = {client.post(f"{server.url}/api/v1/{route}", files=files).status_code for _ in range(repeats)}
            per_request_ms = 1000 * (cpu_seconds(server.pid) - before) / repeats
            out[kind] = {"status": sorted(statuses), "server_cpu_ms": round(per_request_ms, 1)}
            print(f"{kind}: {sorted(statuses)}, {per_request_ms:.1f} ms of server CPU each", flush=True)
        out["ready_after"] = {"status": [client.get(f"{server.url}/health/ready").status_code], "server_cpu_ms": 0.0}
    return out


if __name__ == "__main__":
    hostile(REPO / "model")
