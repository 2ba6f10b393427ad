"""Overload shedding (a bounded inference queue) and a graceful drain on SIGTERM."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest

import cifar_onnx.batching
from cifar_onnx.app import create_app
from cifar_onnx.serving import InferenceQueue, OverloadedError
from cifar_onnx.settings import Settings
from tests.conftest import serving_in_thread, start_server
from tests.images import sample


def test_queue_refuses_past_its_bound_then_serves_again() -> None:
    async def scenario() -> None:
        queue = InferenceQueue(workers=1, max_queue=1, max_batch=Settings().max_batch)
        release = threading.Event()

        async def until(running: int, inside: int) -> None:
            for _ in range(500):  # the tasks start on the loop: bounded wait, no fixed sleep
                if (queue.limiter.statistics().borrowed_tokens, queue.inside) == (running, inside):
                    return
                await anyio.sleep(0.01)
            raise AssertionError(f"never {running} running and {inside} admitted")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run, lambda: release.wait(10))  # running
            await until(1, 1)
            tasks.start_soon(queue.run, lambda: release.wait(10))  # waiting: the queue is now full
            await until(1, 2)
            with pytest.raises(OverloadedError) as refused:
                await queue.run(lambda: None)
            assert refused.value.status == 503 and "1 requests already waiting" in refused.value.message
            release.set()
        assert await queue.run(lambda: 42) == 42

    anyio.run(scenario)


def test_overloaded_api_answers_503_json_with_retry_after(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real HTTP, one inference worker held busy by a slowed model, a queue of one: the next
    request is refused at once with 503; once the queue drains, requests are served again."""
    real, release = cifar_onnx.batching.timed_predict, threading.Event()

    def held(*args: object):
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(cifar_onnx.batching, "timed_predict", held)
    # One thread a request: alone, the first would run on the event loop itself, not held on the worker.
    settings = Settings.from_env(
        environ={}, model_dir=model_dir, max_queue=1, inference_workers=1, lone_request_threads=1
    )
    app = create_app(settings, wait_for_models=True)
    pool, stack = ThreadPoolExecutor(2), contextlib.ExitStack()
    try:
        url = stack.enter_context(serving_in_thread(app))

        def post() -> httpx.Response:
            return httpx.post(
                f"{url}/api/v1/predict", files={"file": ("cat.jpg", sample("cat"), "image/jpeg")}, timeout=20
            )

        def wait_until(running: int, inside: int) -> None:
            for _ in range(200):
                queue = app.state.queue
                if (queue.limiter.statistics().borrowed_tokens, queue.inside) == (running, inside):
                    return
                time.sleep(0.02)
            raise AssertionError(f"queue never reached {running} running, {inside} admitted")

        first = pool.submit(post)
        wait_until(1, 1)
        second = pool.submit(post)  # waits for the one inference worker, behind the first
        wait_until(1, 2)
        shed = post()
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
        assert shed.json()["error"] == "overloaded" and "capacity" in shed.json()["message"]
        assert httpx.get(f"{url}/health/ready").status_code == 200  # shedding is not a fault
        page = httpx.post(f"{url}/classify", files={"files": ("cat.jpg", sample("cat"), "image/jpeg")},
                          headers={"HX-Request": "true"}, timeout=20)  # fmt: skip
        assert page.status_code == 503 and page.headers["retry-after"] == "1" and "capacity" in page.text
        release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert post().status_code == 200
        shed_total = re.search(r'^cifar_onnx_shed_requests_total\{reason="queue"\} (\S+)$',
                               httpx.get(f"{url}/metrics").text, re.M)  # fmt: skip
        assert shed_total and float(shed_total.group(1)) >= 1
    finally:
        release.set()
        pool.shutdown()
        stack.close()


@pytest.mark.slow
def test_sigterm_under_load_answers_every_request_in_flight(model_dir: Path) -> None:
    """The real server: 12 batch requests in flight, then SIGTERM. Every one is answered 200 and
    the process exits by itself within 10 s."""
    proc, url = start_server(model_dir)
    try:
        files = [("files", (f"{i}.jpg", sample("ship"), "image/jpeg")) for i in range(8)]
        statuses: list[int | str] = []
        # Each client opens its connection first, so that every request is sent on a connection
        # the server has accepted: SIGTERM then stops new connections, not these.
        ready = threading.Barrier(13)

        def send() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                client.get("/health/live")
                ready.wait(30)
                try:
                    statuses.append(client.post("/api/v1/predict/batch", files=files).status_code)
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)

        clients = [threading.Thread(target=send) for _ in range(12)]
        for thread in clients:
            thread.start()
        ready.wait(30)
        time.sleep(0.5)  # the requests are sent and queued behind the inference workers
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        for thread in clients:
            thread.join(30)
        assert statuses == [200] * 12, statuses
        # uvicorn drains, then re-raises the signal: exit status -SIGTERM is the graceful end.
        assert proc.wait(10) in (0, -signal.SIGTERM) and time.monotonic() - stopped < 10
    finally:
        if proc.poll() is None:
            proc.kill()
