"""Hostile uploads and big hosts: CPU counts from the container, explain on many threads, memory
bounded per image and in total, limits before parsing, settings validated, request ids in logs,
no local paths in /api/v1/models."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cifar_onnx import cpu, preprocess
from cifar_onnx.preprocess import DecodeBudget, DecoderBusyError, TooManyPixelsError, decode_image, decode_square
from cifar_onnx.settings import Settings
from tests.conftest import SHIPPED, make_client, serving_in_thread
from tests.images import encode, png_claiming_huge_size, sample

# --- CPUs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, a limit of 1.5 CPUs
    ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),  # v1, none
    ({}, None),  # no cgroup files at all
])  # fmt: skip
def test_cpu_quota_is_read_from_cgroup_files(tmp_path: Path, files: dict[str, str], expected: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu.cgroup_cpu_limit(tmp_path) == expected


def test_thread_defaults_follow_the_usable_cpus() -> None:
    """In a process pinned to one CPU, the thread defaults are 1, whatever the machine has."""
    import subprocess
    import sys

    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from cifar_onnx.settings import Settings; s = Settings.from_env(environ={}); "
            "print(s.inference_workers, s.explain_threads)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED.glob("*.onnx")))
def test_explain_answers_with_more_threads_than_images(name: str) -> None:
    """17 occluded copies split over 64 threads used to make empty chunks that ONNX Runtime refused."""
    with make_client(SHIPPED, explain_threads=64) as client:
        response = client.post("/api/v1/explain", params={"model": name},
                               files={"file": ("cat.jpg", sample("cat"), "image/jpeg")})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"


# --- memory per image and in total ---------------------------------------------------------------


def test_a_header_claiming_a_huge_image_is_refused_in_the_services_words() -> None:
    started = time.process_time()
    with pytest.raises(TooManyPixelsError, match=r"100000x100000 pixels; the limit is 12,000,000"):
        decode_image(png_claiming_huge_size(100_000, 100_000))
    assert time.process_time() - started < 0.05, "refused from the header, nothing decoded"


def test_a_large_jpeg_is_decoded_at_a_reduced_scale() -> None:
    """A 4000x3000 photo: the JPEG decoder's 1/8 scale already covers a 32 px input, so it never
    holds 12 M pixels, and the model's input is close to the full decode's."""
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (30, 40, 3)), np.ones((100, 100, 1))).astype(np.uint8)
    data = encode(Image.fromarray(smooth), "JPEG", quality=90)
    square = decode_square(data, min_side=32)
    assert square.size[0] <= 3000 // 8 + 1, square.size
    full = np.asarray(
        Image.open(io.BytesIO(data))
        .convert("RGB")
        .crop((500, 0, 3500, 3000))
        .resize((32, 32), Image.Resampling.BICUBIC)
    )
    assert np.abs(decode_image(data).astype(int) - full.astype(int)).mean() < 3
    # Under the per-image limit only because of the scaling: a PNG that size is refused.
    with pytest.raises(TooManyPixelsError):
        decode_image(encode(Image.fromarray(smooth[:, :, 0]), "PNG"), max_pixels=4_000_000)


def test_decodes_wait_for_room_in_the_budget_then_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = DecodeBudget(1_000, wait_s=0.2)
    monkeypatch.setattr(preprocess, "BUDGET", budget)
    with budget.hold(1_000):  # the whole budget taken by another decode
        started = time.monotonic()
        with pytest.raises(DecoderBusyError) as busy:
            decode_image(sample("cat"))
        assert busy.value.status_code == 503 and 0.2 <= time.monotonic() - started < 2

    budget.wait_s = 5.0

    holding, released_at = threading.Event(), []

    def hold_briefly() -> None:
        with budget.hold(1_000):
            holding.set()
            time.sleep(0.3)
            released_at.append(time.monotonic())

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    assert holding.wait(5)
    assert decode_image(sample("cat")).shape == (32, 32, 3)  # waited for the room, then decoded
    assert released_at and time.monotonic() >= released_at[0], "decoded only after the room was given back"
    holder.join(5)
    assert budget.free == budget.total, "every decode gives its pixels back"


def test_decoder_busy_is_a_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    with make_client(SHIPPED, decode_budget_pixels=1_000) as client:
        monkeypatch.setattr(preprocess, "BUDGET", DecodeBudget(1_000, wait_s=0.1))
        with preprocess.BUDGET.hold(1_000):
            response = client.post("/api/v1/predict", files={"file": ("cat.jpg", sample("cat"), "image/jpeg")})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "decoding other large images" in response.json()["message"]
        assert (
            client.post("/api/v1/predict", files={"file": ("cat.jpg", sample("cat"), "image/jpeg")}).status_code == 200
        )


# --- limits before parsing ------------------------------------------------------------------------


def test_one_oversized_part_refuses_the_batch_and_single_routes_have_small_limits() -> None:
    big = b"\xff\xd8\xff" + bytes(2_000_000)
    with make_client(SHIPPED, max_upload_bytes=1_000_000) as client:
        batch = client.post("/api/v1/predict/batch", files=[("files", ("a.jpg", sample("cat"), "image/jpeg")),
                                                             ("files", ("b.jpg", big, "image/jpeg"))])  # fmt: skip
        assert (
            batch.status_code == 413
            and batch.json()["message"] == "A file is larger than the limit of 1,000,000 bytes."
        )
        single = client.post("/api/v1/predict", files={"file": ("b.jpg", big, "image/jpeg")})
        assert single.status_code == 413 and "The request is larger than the limit of 1,016,384 bytes" in single.text
        assert client.post("/api/v1/predict", files={"file": ("a.jpg", sample("cat"), "image/jpeg")}).status_code == 200


def test_part_meter_finds_delimiters_split_across_chunks() -> None:
    from cifar_onnx.limits import PartMeter

    body = b"--xyz\r\nheaders\r\n\r\n" + b"a" * 100 + b"\r\n--xyz\r\nh\r\n\r\n" + b"b" * 10 + b"\r\n--xyz--\r\n"
    for size in (1, 3, 7, 1000):
        meter = PartMeter(b"xyz")
        largest = max(meter.feed(body[i : i + size]) for i in range(0, len(body), size))
        assert 100 < largest < 140, (size, largest)


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("MAX_QUEUE", "-1"), ("INFERENCE_WORKERS", "0"), ("PORT", "70000"),
                                         ("INT8_FUSION", "maybe"), ("LOG_FORMAT", "xml"), ("MAX_PIXELS", "0"),
                                         ("BATCH_WAIT_MS", "inf"), ("BATCH_WAIT_MS", "nan"), ("BATCH_WAIT_MS", "101"),
                                         ("MAX_WAIT_MS", "inf"), ("BODY_IDLE_S", "0"), ("EXPLAIN_SIZE", "100000")])  # fmt: skip
def test_out_of_range_settings_stop_the_start_with_their_name(name: str, value: str) -> None:
    with pytest.raises(SystemExit, match=f"CIFAR_ONNX_{name}="):
        Settings.from_env(environ={f"CIFAR_ONNX_{name}": value})


def test_limits_must_nest_and_log_levels_ignore_case() -> None:
    with pytest.raises(SystemExit, match=r"CIFAR_ONNX_MAX_REQUEST_BYTES=\d+ must not exceed CIFAR_ONNX_MAX_BODY_BYTES"):
        Settings.from_env(environ={"CIFAR_ONNX_MAX_REQUEST_BYTES": str(128 * 2**20)})
    assert Settings.from_env(environ={"CIFAR_ONNX_LOG_LEVEL": "WARNING"}).log_level == "warning"


@pytest.mark.parametrize("variable", ["CIFAR_ONNX_BATCH_WAIT_MS=inf", "CIFAR_ONNX_DEFAULT_MODEL=nope"])
def test_the_server_refuses_to_start_with_one_line(variable: str, model_dir: Path) -> None:
    """The real command: exit code 1 and one line that names the setting, before serving."""
    import os
    import subprocess
    import sys

    name, value = variable.split("=")
    env = {**os.environ, "CIFAR_ONNX_MODEL_DIR": str(model_dir), name: value}
    done = subprocess.run([sys.executable, "-m", "cifar_onnx.cli", "serve", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and name in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_mistyped_setting_is_warned_about_with_the_closest_name(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("cifar_onnx").propagate = True  # the app's logging config may have turned it off
    with caplog.at_level(logging.WARNING, logger="cifar_onnx"):
        Settings.from_env(environ={"CIFAR_ONNX_MAX_QUEU": "8", "CIFAR_ONNX_CACHE": "/tmp"})
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "CIFAR_ONNX_MAX_QUEU is not a setting" in m and "did you mean CIFAR_ONNX_MAX_QUEUE?" in m for m in messages
    )
    assert not any("CIFAR_ONNX_CACHE" in m for m in messages), "training's variable is known"


# --- logs and metadata ----------------------------------------------------------------------------


def test_request_ids_are_returned_and_logged_as_json(capfd: pytest.CaptureFixture) -> None:
    with make_client(SHIPPED, log_format="json") as client:
        given = client.post("/api/v1/predict", headers={"X-Request-ID": "job-42"},
                            files={"file": ("x.jpg", b"\xff\xd8\xff broken", "image/jpeg")})  # fmt: skip
        made = client.get("/health/live")
        client.get("/api/v1/models")
    assert given.headers["x-request-id"] == "job-42" and len(made.headers["x-request-id"]) == 32
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("loaded ") and "int8" in line["message"] for line in lines), lines[:3]
    assert all({"time", "level", "logger", "request_id", "message"} <= set(line) for line in lines)


def test_models_route_shows_no_local_paths() -> None:
    with make_client(SHIPPED) as client:
        listed = client.get("/api/v1/models").json()["models"]
    text = json.dumps(listed)
    assert "/root" not in text and "checkpoint" not in text and "export_command" not in text
    for model in listed:
        meta = model["metadata"]
        assert {"classes", "input", "accuracy", "calibration", "members", "int8_mode"} <= set(meta)
        assert all("init" in member for member in meta["members"]), "provenance in words"


# --- a flood of worst-case uploads against the real server -----------------------------------------

DEPLOYMENT_MEMORY_LIMIT = 768 * 1024 * 1024  # deploy/k8s/deployment.yaml and docker-compose.yml


@pytest.mark.slow
def test_worst_case_uploads_at_once_stay_under_the_memory_limit() -> None:
    """The queue full of the largest images the service decodes (RGBA PNGs just under the pixel
    limit, the costliest to decode), single and batch requests at once: the server's peak RSS
    stays under the Deployment's limit, every request is answered (200, or 503 with the
    service's message when the decode budget stays full), and the service stays ready."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.conftest import start_server

    side = int(Settings.from_env(environ={}).max_pixels ** 0.5) - 1
    pixels = np.zeros((side, side, 4), dtype=np.uint8)  # compresses to a small upload, decodes in full
    pixels[::7, ::5] = np.random.default_rng(0).integers(0, 256, pixels[::7, ::5].shape, dtype=np.uint8)
    worst = encode(Image.fromarray(pixels, "RGBA"), "PNG")
    proc, url = start_server(SHIPPED)
    try:

        def single(_: int) -> httpx.Response:
            return httpx.post(f"{url}/api/v1/predict", files={"file": ("worst.png", worst, "image/png")}, timeout=120)

        def batch(_: int) -> httpx.Response:
            return httpx.post(f"{url}/api/v1/predict/batch", timeout=120,
                              files=[("files", (f"w{i}.png", worst, "image/png")) for i in range(4)])  # fmt: skip

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(single, range(20))) + list(pool.map(batch, range(4)))
            ready = httpx.get(f"{url}/health/ready", timeout=10).status_code
        peak = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if line.startswith("VmHWM:"))  # fmt: skip
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= 2, statuses
        for refused in (a for a in answers if a.status_code == 503):
            assert refused.headers["retry-after"] and refused.json()["error"] in ("overloaded", "decoder_busy")
        assert ready == 200
        assert peak < DEPLOYMENT_MEMORY_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
        print(f"peak RSS {peak / 2**20:.0f} MiB; answers {sorted(set(statuses))}: {statuses.count(200)} x 200")
    finally:
        proc.terminate()
        proc.wait(10)


def test_bodies_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """One upload held in inference, a second whose body would pass the bound: refused with 503
    as its first bytes arrive; served again once the first is answered."""
    from concurrent.futures import ThreadPoolExecutor

    import cifar_onnx.batching

    real, release = cifar_onnx.batching.timed_predict, threading.Event()
    monkeypatch.setattr(cifar_onnx.batching, "timed_predict", lambda *a: (release.wait(10), real(*a))[1])
    image = sample("cat")
    limits = dict(max_upload_bytes=len(image) + 1000, max_request_bytes=len(image) + 1000)
    with (
        # One thread a request: alone, the first would run on the event loop itself, not held on a worker.
        make_client(SHIPPED, max_body_bytes_in_flight=len(image) + 1000, lone_request_threads=1, **limits) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        first = pool.submit(client.post, "/api/v1/predict", files={"file": ("a.jpg", image, "image/jpeg")})
        for _ in range(200):
            if client.app.state.queue.inside == 1:
                break
            time.sleep(0.01)
        second = client.post("/api/v1/predict", files={"file": ("b.jpg", image, "image/jpeg")})
        release.set()
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert "receiving other large uploads" in second.json()["message"]
        assert first.result().status_code == 200
        assert client.post("/api/v1/predict", files={"file": ("c.jpg", image, "image/jpeg")}).status_code == 200


def test_a_model_that_fails_to_load_is_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cifar_onnx.registry import ModelStore

    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    (tmp_path / "broken.json").write_text(json.dumps({"classes": ["a"], "input": {"name": "image", "size": 32},
                                                      "output": {"name": "probabilities"}}))  # fmt: skip
    logging.getLogger("cifar_onnx").propagate = True
    store = ModelStore(tmp_path)
    with caplog.at_level(logging.ERROR, logger="cifar_onnx"):
        store.load_in_background().join(30)
    assert not store.ready and store.error
    failed = [r for r in caplog.records if "loading the models failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None and store.error in failed[0].getMessage()


def _stalled_upload(url: str, declared: int = 1_000_000) -> socket.socket:
    """A socket that sends a request's headers and 1 KB of a `declared`-byte upload, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
            '--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + b"\xff\xd8\xff" + b"\x00" * 1021)
    return sock


def _answer(sock: socket.socket) -> tuple[bytes, bool]:
    """What the server wrote before closing, and whether it closed (within the socket's timeout)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    return data, True


@pytest.mark.slow
def test_stalled_uploads_hold_nothing_others_need(model_dir: Path) -> None:
    """40 clients send headers and 1 KB of a 1 MB upload, then stall. They must not take the
    queue's places nor the body budget from others: 20 uploads from another client are answered
    200 meanwhile, and each stalled one is answered 408 and closed once its idle deadline passes."""
    from cifar_onnx.app import create_app

    settings = Settings.from_env(environ={}, model_dir=model_dir, max_queue=8, inference_workers=1, body_idle_s=1.0,
                                 max_body_bytes_in_flight=2 * 1024 * 1024, max_request_bytes=2 * 1024 * 1024,
                                 max_upload_bytes=1024 * 1024)  # fmt: skip
    with serving_in_thread(create_app(settings, wait_for_models=True)) as url:
        stalled = [_stalled_upload(url) for _ in range(40)]
        started = time.monotonic()
        with httpx.Client(base_url=url, timeout=20) as other:
            codes = [other.post("/api/v1/predict", files={"file": ("cat.jpg", sample("cat"), "image/jpeg")}).status_code
                     for _ in range(20)]  # fmt: skip
        assert codes == [200] * 20
        answers = [_answer(sock) for sock in stalled]
        assert all(closed and data.startswith(b"HTTP/1.1 408") for data, closed in answers), answers[0]
        assert b"request_timeout" in answers[0][0]
        assert time.monotonic() - started < 10
        for sock in stalled:
            sock.close()
