"""The parts of the service that must keep working when something inside them fails or is slow:
the batcher, admission by time, explain's share of the workers, the overload log."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import anyio
import numpy as np
import pytest

import cifar_onnx.batching
from cifar_onnx.batching import Batcher
from cifar_onnx.logs import REQUEST_ID, ShedLog
from cifar_onnx.registry import load_model
from cifar_onnx.serving import InferenceQueue, OverloadedError
from cifar_onnx.threads import Threads
from tests.tiny_model import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tiny")
    return load_model(write_tiny_model(folder, "tiny"), threads=1)


def test_the_batcher_answers_a_failed_round_and_keeps_serving(tiny) -> None:
    """A round that fails outside the model call (here: images that cannot be joined) answers
    its requests with the error, and the next request is served: the drain does not die."""

    async def scenario() -> None:
        batcher = Batcher(tiny, anyio.CapacityLimiter(1), Threads(1), max_batch=8)
        good = np.zeros((1, tiny.image_size, tiny.image_size, 3), np.uint8)
        odd = np.zeros((1, 5, 5, 3), np.uint8)  # cannot be concatenated with the others
        results = await asyncio.gather(batcher.infer(good), batcher.infer(odd), return_exceptions=True)
        assert any(isinstance(r, ValueError) for r in results)
        answer = await asyncio.wait_for(batcher.infer(good), 10)
        assert answer.probabilities.shape == (1, len(tiny.classes))
        assert batcher.draining == 0

    anyio.run(scenario)


def test_the_batchers_task_does_not_carry_a_requests_id(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain serves many requests: it starts from an empty context, so its log lines (and the
    inference thread it runs) carry no request's id but their own."""
    seen: list[str] = []
    real = cifar_onnx.batching.timed_predict

    def spy(model, batch):  # in the worker thread, which runs in the drain's context
        seen.append(REQUEST_ID.get())
        return real(model, batch)

    monkeypatch.setattr(cifar_onnx.batching, "timed_predict", spy)

    async def scenario() -> None:
        batcher = Batcher(tiny, anyio.CapacityLimiter(1), Threads(1), max_batch=8)
        REQUEST_ID.set("the-first-request")
        await batcher.infer(np.zeros((1, tiny.image_size, tiny.image_size, 3), np.uint8))

    anyio.run(scenario)
    assert seen == ["-"]


def test_admission_by_time_refuses_while_a_long_queue_stands() -> None:
    """With one worker busy and every request answered lately after 800 ms inside, a standing
    queue past max_wait_ms (500): refused although the count bound (32) is far off. Once answers
    come after 10 ms again (the queue drained), requests are let in."""

    async def scenario() -> None:
        queue = InferenceQueue(workers=1, max_queue=32, max_batch=8, max_wait_ms=500)
        now = time.monotonic()
        for i in range(3):  # three windows of long stays
            queue.delay.add(0.800, now + i)
        release = threading.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run, lambda: release.wait(10))
            for _ in range(500):
                if queue.inside == 1:
                    break
                await anyio.sleep(0.01)
            with pytest.raises(OverloadedError) as refused:
                await queue.run(lambda: None)
            assert "inside for 800 ms" in refused.value.message and queue.reason == "wait"
            for i in range(3, 5):
                queue.delay.add(0.010, now + i)
            assert not queue.full()
            release.set()

    anyio.run(scenario)


def test_explain_holds_as_many_workers_as_threads_it_runs() -> None:
    """While a wide call runs with n threads it holds n of the workers; other calls wait."""

    async def scenario() -> None:
        queue = InferenceQueue(workers=2, max_queue=8, max_batch=8)
        inside = threading.Event()
        release = threading.Event()
        threads_given: list[int] = []

        def wide(threads: int) -> None:
            threads_given.append(threads)
            inside.set()
            release.wait(10)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(queue.run_wide, wide, 8)
            await anyio.to_thread.run_sync(inside.wait, 10)
            assert threads_given == [2], "never more threads than inference workers"
            assert queue.limiter.statistics().borrowed_tokens == 2
            release.set()
        assert queue.limiter.statistics().borrowed_tokens == 0

    anyio.run(scenario)


def test_the_end_of_an_overload_burst_is_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    shed = ShedLog(every_s=10.0)
    logging.getLogger("cifar_onnx").propagate = True
    with caplog.at_level(logging.WARNING, logger="cifar_onnx"):
        for _ in range(5):
            shed.refused(3)
        clock[0] += 0.5
        shed.admitted()  # refusals still recent: the burst goes on
        assert not [r for r in caplog.records if "overload over" in r.getMessage()]
        clock[0] += 2.0
        shed.admitted()
    ended = [r.getMessage() for r in caplog.records if "overload over" in r.getMessage()]
    assert ended and "shed 5 more requests" in ended[0]


def test_a_burst_that_drains_is_not_a_standing_queue() -> None:
    """Within a window, one short stay among long ones (a batch answered at once, a slow request
    beside quick ones) means the queue drains: the standing delay is the shortest stay."""
    from cifar_onnx.serving import StandingDelay

    delay = StandingDelay(window_s=1.0)
    for i, stay in enumerate([0.9, 0.02, 0.9, 0.9]):
        delay.add(stay, 10.0 + i * 0.1)
    delay.add(0.9, 11.5)  # the first window closes
    assert delay.value == pytest.approx(0.02)
    for i in range(5):
        delay.add(0.7, 12.0 + i * 0.1)
    delay.add(0.7, 13.6)  # a window of long stays only: a queue stands
    assert delay.value == pytest.approx(0.7)


def test_a_cancelled_caller_holds_its_worker_until_the_thread_ends_and_logs_keep_its_id() -> None:
    """No more calls run than the limiter allows, even when clients go away mid-call."""

    async def scenario() -> None:
        limiter, threads = anyio.CapacityLimiter(1), Threads(2)
        started, release = threading.Event(), threading.Event()
        REQUEST_ID.set("req-42")
        assert await threads.limited(limiter, REQUEST_ID.get) == "req-42"

        def busy() -> None:
            started.set()
            release.wait(30)

        call = asyncio.get_running_loop().create_task(threads.limited(limiter, busy))
        while not started.is_set():  # the call is on its thread
            await asyncio.sleep(0)
        call.cancel()
        for _ in range(20):  # let the cancellation arrive
            await asyncio.sleep(0)
        assert not call.done() and limiter.borrowed_tokens == 1, "the place was given up while the thread ran"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert limiter.borrowed_tokens == 0

    anyio.run(scenario)
