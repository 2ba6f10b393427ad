"""Dynamic batching (cifar_onnx.batching): requests waiting for the same model go through ONNX
Runtime together, and each answer is the one the image gets alone."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image

import cifar_onnx.batching
from cifar_onnx.app import create_app
from cifar_onnx.classify import timed_predict
from cifar_onnx.preprocess import DEFAULT_MAX_PIXELS, decode_image
from cifar_onnx.registry import ServedModel, load_model
from cifar_onnx.serving import DECODE_ON_WORKER, InferenceQueue
from cifar_onnx.settings import Settings
from tests.conftest import SHIPPED, dataset_dir, make_client, serving_in_thread
from tests.images import encode, sample, sample_image

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def hundred_images() -> np.ndarray:
    """100 images: the CIFAR-10 test folder's when this machine has it, else the shipped samples
    shifted and mirrored."""
    root = dataset_dir()
    if root is not None:
        return np.stack(
            [decode_image((root / "test" / c / f"{i:04d}.jpg").read_bytes()) for c in LABELS for i in range(10)]
        )
    base = [decode_image(sample(label)) for label in LABELS]
    return np.stack([np.roll(b if i % 2 else b[:, ::-1], i // 2, axis=1) for i in range(10) for b in base])


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.onnx")), ids=lambda p: p.stem)
def test_batched_answers_are_the_single_image_answers(path: Path) -> None:
    images = hundred_images()
    model = load_model(path, threads=1)

    async def scenario() -> list:
        queue = InferenceQueue(workers=2, max_queue=200, max_batch=32)
        batcher = queue.batcher(model)
        results: list = [None] * len(images)

        async def one(i: int) -> None:
            results[i] = await batcher.infer(images[i : i + 1])

        async with anyio.create_task_group() as tasks:
            for i in range(len(images)):
                tasks.start_soon(one, i)
        return results

    results = anyio.run(scenario)
    assert max(r.batch_images for r in results) > 1, "100 requests at once: some must have been joined"
    assert max(r.batch_images for r in results) <= 32
    batched = np.concatenate([r.probabilities for r in results])
    alone = np.concatenate([model.predict(images[i : i + 1]) for i in range(len(images))])
    assert (batched.argmax(1) == alone.argmax(1)).all()
    assert np.abs(batched - alone).max() <= 1e-5


def test_concurrent_requests_with_different_models_and_top_k(model_dir: Path) -> None:
    """Real requests through the app, several models and top_k values at once, a batching wait so
    that they meet: every answer is what that request gets alone, and /metrics counts batches."""
    names = ["cifar10", "vgg16_bn", "airbench"]
    jobs = [(LABELS[i % 10], names[i % 3], 1 + i % 5) for i in range(24)]
    with make_client(model_dir, batch_wait_ms=30.0, inference_workers=1) as client:

        def post(job: tuple[str, str, int]) -> dict:
            label, model, k = job
            response = client.post("/api/v1/predict", params={"model": model, "top_k": k},
                                   files={"file": (f"{label}.jpg", sample(label), "image/jpeg")})  # fmt: skip
            assert response.status_code == 200, response.text
            return response.json()

        def counted() -> tuple[float, float]:
            """ONNX Runtime calls and the images they had, over all models so far."""
            text = client.get("/metrics").text
            return tuple(sum(float(v) for v in re.findall(rf'^cifar_onnx_batch_images_{kind}{{model="\w+"}} (\S+)$', text, re.M))
                         for kind in ("count", "sum"))  # fmt: skip

        before = counted()
        with ThreadPoolExecutor(12) as pool:
            together = list(pool.map(post, jobs))
        calls, images = (after - earlier for after, earlier in zip(counted(), before, strict=False))
        alone = [post(job) for job in jobs]
        # Every admitted request gave its place back (the queue bound counts these; the benchmarks
        # wait for 0 between levels).
        assert re.search(r"^cifar_onnx_requests_in_flight 0\.0$", client.get("/metrics").text, re.M)
    for job, a, b in zip(jobs, together, alone, strict=False):
        assert a["model"] == job[1] and len(a["top_k"]) == job[2]
        assert [s["label"] for s in a["top_k"]] == [s["label"] for s in b["top_k"]]
        assert all(
            abs(x["probability"] - y["probability"]) <= 1e-5 for x, y in zip(a["top_k"], b["top_k"], strict=False)
        )
    assert images > calls, f"no call joined two requests ({calls} calls, {images} images)"


def _hand_offs(queue: InferenceQueue) -> list[str]:
    """Records the name of each function `queue` hands to a worker thread."""
    names: list[str] = []
    run = queue.threads.run

    async def counted(fn: Callable[..., object], *args: object) -> object:
        names.append(getattr(fn, "__name__", type(fn).__name__))
        return await run(fn, *args)

    queue.threads.run = counted  # type: ignore[method-assign]
    return names


def test_an_idle_model_decodes_and_infers_in_one_hand_off() -> None:
    """A small upload that finds its model idle is decoded on the inference worker, in one
    hand-off to a thread instead of two, with the same answer; a large one, or any upload while a
    batching wait is set, keeps to the decoders' threads and the batcher."""
    model = load_model(SHIPPED / "cifar10.onnx", threads=1)
    small = sample("cat")
    large = encode(sample_image("cat").resize((1200, 1200)), "PNG")
    assert len(small) <= DECODE_ON_WORKER < len(large)

    async def scenario(data: bytes, batch_wait_ms: float = 0.0) -> tuple[list[str], np.ndarray]:
        queue = InferenceQueue(workers=2, max_queue=8, max_batch=8, batch_wait_ms=batch_wait_ms)
        names = _hand_offs(queue)
        answer = (await queue.classify([(None, data)], model, 10, DEFAULT_MAX_PIXELS))[0]
        return names, np.array([s.probability for s in sorted(answer.top_k, key=lambda s: s.index)])

    for data, wait, expected in [(small, 0.0, 1), (large, 0.0, 2), (small, 5.0, 2)]:
        names, probs = anyio.run(scenario, data, wait)
        assert len(names) == expected, names
        alone = model.predict(decode_image(data)[None])[0]
        assert np.abs(probs - alone).max() <= 1e-5


def test_infer_now_runs_nothing_when_the_model_is_busy() -> None:
    """No worker free (or requests already waiting for the model): infer_now declines without
    calling the image maker, and the request goes to the batcher as before."""
    model = load_model(SHIPPED / "cifar10.onnx", threads=1)
    image = decode_image(sample("dog"))[None]

    async def scenario() -> tuple[object, int]:
        queue = InferenceQueue(workers=1, max_queue=8, max_batch=8)
        batcher, made = queue.batcher(model), 0

        def make() -> np.ndarray:
            nonlocal made
            made += 1
            return image

        holder = object()
        await queue.limiter.acquire_on_behalf_of(holder)  # the only worker is busy
        declined = await batcher.infer_now(make)
        queue.limiter.release_on_behalf_of(holder)
        done = await batcher.infer_now(make)
        assert done is not None and np.abs(done.probabilities - model.predict(image)).max() <= 1e-5
        return declined, made

    declined, made = anyio.run(scenario)
    assert declined is None and made == 1


def _recording(queue: InferenceQueue, monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, float, bool]]:
    """Records, for each inference of `queue`: on the lone session?, places taken, on the event loop?"""
    calls: list[tuple[bool, float, bool]] = []

    def recording(served: ServedModel, batch: np.ndarray, lone: bool = False) -> tuple[np.ndarray, float]:
        calls.append((lone, queue.limiter.borrowed_tokens, threading.current_thread() is threading.main_thread()))
        return timed_predict(served, batch, lone)

    monkeypatch.setattr("cifar_onnx.batching.timed_predict", recording)
    return calls


ON_LOOP, ON_WORKER, ONE_WORKER = (True, 2, True), (True, 2, False), (False, 1, False)


def test_a_request_alone_runs_on_every_core_and_not_while_others_are_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alone in a quiet service, a request takes every worker's place and runs on the model's
    lone session (more threads, the same answer); with another request inside, and for QUIET_S
    after one was, it runs on one worker as before."""
    model = load_model(SHIPPED / "cifar10.onnx", threads=1, lone_threads=2)
    assert model.lone is not None and load_model(SHIPPED / "cifar10.onnx", threads=1, lone_threads=1).lone is None
    image = decode_image(sample("ship"))[None]
    assert np.abs(model.predict(image, lone=True) - model.predict(image)).max() <= 1e-5

    async def scenario() -> list[tuple[bool, float, bool]]:
        queue = InferenceQueue(workers=2, max_queue=8, max_batch=8)
        calls = _recording(queue, monkeypatch)
        ask = lambda: queue.classify([(None, sample("ship"))], model, 3, DEFAULT_MAX_PIXELS)  # noqa: E731
        with queue.place():
            await ask()  # alone: every core
            other = queue.take()  # a second request comes in
            await ask()
            queue.release(other)
            await ask()  # alone again, but the service was crowded a moment ago
            monkeypatch.setattr("cifar_onnx.serving.QUIET_S", 0.0)
            other = queue.take()
            queue.release(other)
            await ask()  # quiet again at once (and on the loop itself: see the next test)
        return calls

    assert anyio.run(scenario) == [ON_WORKER, ONE_WORKER, ONE_WORKER, ON_LOOP]


def test_a_lone_request_runs_on_the_event_loop_only_while_one_connection_sends_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request alone, with a light decode, on the connection that sent every request of the
    last QUIET_S: run from the event loop itself, no hand-off. A small file that declares many
    pixels is decoded on a worker. After a request on another connection, for QUIET_S, on a
    worker: the loop reads no request while it runs one, so several clients would otherwise each
    find themselves alone in turn and be served one by one."""
    model = load_model(SHIPPED / "cifar10.onnx", threads=1, lone_threads=2)
    heavy = encode(Image.new("RGB", (3000, 3000), "gray"), "PNG")
    assert len(heavy) <= DECODE_ON_WORKER

    async def scenario() -> list[tuple[bool, float, bool]]:
        queue = InferenceQueue(workers=2, max_queue=8, max_batch=8)
        calls = _recording(queue, monkeypatch)

        async def ask(client: str, data: bytes) -> None:
            with queue.place(client):
                await queue.classify([(None, data)], model, 3, DEFAULT_MAX_PIXELS)

        monkeypatch.setattr("cifar_onnx.serving.QUIET_S", 0.0)  # a connection's first request counts at once
        await ask("a", sample("ship"))
        await ask("a", heavy)
        monkeypatch.setattr("cifar_onnx.serving.QUIET_S", 1.0)
        await ask("b", sample("ship"))  # another connection
        await ask("b", sample("ship"))  # the same one, within QUIET_S of the change
        await ask(None, sample("ship"))  # a connection that cannot be named
        return calls

    assert anyio.run(scenario) == [ON_LOOP, ON_WORKER, ON_WORKER, ON_WORKER, ON_WORKER]


def test_over_http_a_second_connection_sends_the_first_back_to_the_workers(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real HTTP, two keep-alive connections: the connection's address reaches the queue, so the
    first connection's requests run on the event loop once it has been alone for QUIET_S, a
    request on the second runs on a worker, and so does the first's next one."""
    monkeypatch.setattr("cifar_onnx.serving.QUIET_S", 0.3)  # time passes with requests, not sleeps
    where: list[str] = []
    real = cifar_onnx.batching.timed_predict

    def recording(served: ServedModel, batch: np.ndarray, lone: bool = False) -> tuple[np.ndarray, float]:
        where.append("worker" if threading.current_thread().name.startswith("cifar-onnx") else "loop")
        return real(served, batch, lone)

    monkeypatch.setattr(cifar_onnx.batching, "timed_predict", recording)
    app = create_app(Settings.from_env(environ={}, model_dir=model_dir), wait_for_models=True)
    files = {"file": ("ship.jpg", sample("ship"), "image/jpeg")}
    with serving_in_thread(app) as url, httpx.Client(base_url=url) as first, httpx.Client(base_url=url) as second:
        for _ in range(2000):  # about QUIET_S of requests, bounded
            assert first.post("/api/v1/predict", files=files).status_code == 200
            if where[-1] == "loop":
                break
        assert where[0] == "worker" and where[-1] == "loop", where
        assert second.post("/api/v1/predict", files=files).status_code == 200
        assert first.post("/api/v1/predict", files=files).status_code == 200
    assert where[-2:] == ["worker", "worker"]
