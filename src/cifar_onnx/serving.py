"""What the JSON API, the page and explain share: the chosen model, the upload's bytes, and
inference off the event loop behind a bounded queue.

The queue bound is the overload guard: past `max_queue` requests waiting for an inference
worker, a request is refused at once with 503 and Retry-After instead of waiting its turn.
A client, a load balancer or an autoscaler can act on a quick refusal; an answer that comes
seconds late helps nobody.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np
from anyio import CapacityLimiter
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Gauge

from cifar_onnx.batching import Batcher
from cifar_onnx.classify import Prediction, decode_batch, decode_each, predictions
from cifar_onnx.errors import NotReadyError, ServiceError
from cifar_onnx.explain import Explanation, explain_bytes
from cifar_onnx.logs import ShedLog
from cifar_onnx.metrics import shed
from cifar_onnx.preprocess import ImageError, light_to_decode
from cifar_onnx.registry import ModelStore, ServedModel
from cifar_onnx.settings import Settings
from cifar_onnx.threads import Threads

T = TypeVar("T")
MULTIPART = RequestEncodingType.MULTI_PART
# Uploads up to this size may be decoded on an idle inference worker (Batcher.infer_now), saving a
# hand-off. The worker is held for the decode (a photo of this size: a millisecond or two), so larger
# photos keep to the decoders' own threads. A small file that declares many pixels is bounded there
# as on those threads, by max_pixels and the decode budget.
DECODE_ON_WORKER = 64 * 1024

WAITING = Gauge("cifar_onnx_inference_waiting", "Requests waiting for an inference worker.")
IN_FLIGHT = Gauge(
    "cifar_onnx_requests_in_flight", "Requests admitted and not yet answered (the queue bound counts these)."
)


class OverloadedError(ServiceError):
    def __init__(self, waiting: int, standing_ms: float):
        super().__init__(503, "overloaded", f"The service is at capacity ({waiting} requests already waiting, "
                                            f"recent ones inside for {standing_ms:.0f} ms); retry in a moment.")  # fmt: skip


class StandingDelay:
    """How long requests stay inside (admitted to answered) when a queue stands: the shortest stay
    among those answered in the last window, as CoDel measures a router's queue. A burst that
    drains (a batch of eight answered at once, one slow batch request) leaves some short stays and
    reads as no queue; a queue that stands makes every stay long. It is measured from the answers
    themselves, so it holds everything a request costs on this CPU (HTTP, decoding, inference, the
    event loop's time spent refusing others) whatever the mix of requests, and needs no per-CPU
    tuning: the same queue that is short on a fast chip is long on a slow one."""

    def __init__(self, window_s: float = 1.0):
        self.window_s, self.value = window_s, 0.0
        self.window_min, self.window_end = math.inf, 0.0

    def add(self, seconds: float, now: float) -> None:
        if now >= self.window_end:  # a window closed: its shortest stay is the standing delay
            if self.window_min < math.inf:
                self.value = self.window_min
            self.window_min, self.window_end = math.inf, now + self.window_s
        self.window_min = min(self.window_min, seconds)


# A request counts as alone (and may run on every core) only when no two were inside at once for
# this long: with two clients taking turns, each would often find itself alone, take every worker
# and make the other wait for it, losing more throughput than the lone call gains (RESULTS.md).
QUIET_S = 1.0

# Set while a request holds the place shed_early gave it, so that `run` does not take a second.
_ADMITTED: ContextVar[bool] = ContextVar("cifar_onnx_admitted", default=False)


class InferenceQueue:
    """`workers` inference calls at once in the thread pool, at most `max_queue` requests waiting
    behind them. Made on the event loop (anyio's limiter needs one).

    A request takes its place when it is admitted, before its upload is read, and keeps it until it
    is answered. Counting only the requests that had reached the worker pool let through every
    request that arrived while one place was free: under a flood they were parsed, then refused in
    `run`, and the accepted ones waited behind that parsing (benchmarks/flood.py measures it;
    benchmarks/RESULTS.md, "Overload", has the figures)."""

    def __init__(self, workers: int, max_queue: int, max_batch: int, batch_wait_ms: float = 0.0,
                 max_wait_ms: float = 500.0):  # fmt: skip
        self.limiter = CapacityLimiter(workers)  # ONNX Runtime calls at once
        self.max_wait_s, self.delay = max_wait_ms / 1000, StandingDelay()
        self.reason = "queue"  # why `full` last said so: the refusal is counted under it
        self.decoders = CapacityLimiter(workers)  # uploads decoded at once
        self.threads = Threads(2 * workers)  # decoding and inference side by side
        self.workers, self.max_queue = workers, max_queue
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_ms / 1000
        self.batchers: dict[str, Batcher] = {}
        self.shed_log = ShedLog()
        self.inside = 0  # admitted and not yet answered; only the event loop changes it
        self.crowded_until = 0.0  # see `alone`
        self.last_client: object = None  # see `one_client`
        self.mixed_until = 0.0
        self.gathering = asyncio.Lock()  # run_wide: one request at a time gathers several workers
        WAITING.set_function(lambda: self.limiter.statistics().tasks_waiting)
        IN_FLIGHT.set_function(lambda: self.inside)

    def waiting(self) -> int:
        return max(0, self.inside - self.workers)

    def full(self) -> bool:
        """No place for another request: the count bound, or a standing queue whose requests stay
        longer than max_wait_ms (with a worker idle nothing waits, whatever was measured)."""
        if self.inside >= self.workers + self.max_queue:
            self.reason = "queue"
            return True
        if self.inside >= self.workers and self.delay.value > self.max_wait_s:
            self.reason = "wait"
            return True
        return False

    def refusal(self) -> OverloadedError:
        shed(self.reason)
        self.shed_log.refused(self.waiting())
        return OverloadedError(self.waiting(), 1000 * self.delay.value)

    def take(self, client: object = None) -> float:
        """A place for the request being handled (the caller checked `full`), from `client` (its
        connection's address, where known); give the returned time to `release` when it is answered."""
        now = time.monotonic()
        self.inside += 1
        if self.inside > 1:
            self.crowded_until = now + QUIET_S
        if client is None or client != self.last_client:
            self.mixed_until = now + QUIET_S
        self.last_client = client
        self.shed_log.admitted()
        return now

    def alone(self) -> bool:
        """The request being handled is the only one inside, and none came while another was in
        the last QUIET_S: it may take every inference worker (Batcher.infer_now)."""
        return self.inside == 1 and time.monotonic() >= self.crowded_until

    def one_client(self) -> bool:
        """Every request of the last QUIET_S came on one connection. Only then may a request alone
        run on the event loop itself: the loop reads no other request meanwhile, so with several
        clients each request would find itself alone in turn and they would all run one by one
        (measured: 32 connections served at the speed of one)."""
        return time.monotonic() >= self.mixed_until

    def release(self, taken_at: float) -> None:
        now = time.monotonic()
        self.delay.add(now - taken_at, now)
        self.inside -= 1

    @contextmanager
    def place(self, client: object = None) -> Iterator[None]:
        taken_at = self.take(client)
        token = _ADMITTED.set(True)
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            self.release(taken_at)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """The place shed_early gave this request, else one taken now (503 when full)."""
        if _ADMITTED.get():
            yield
            return
        if self.full():
            raise self.refusal()
        with self.place():
            yield

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn` on an inference worker."""
        with self.admitted():
            return await self.threads.limited(self.limiter, fn, *args)

    async def run_wide(self, fn: Callable[..., T], threads: int, *args: object) -> T:
        """`fn(*args, n)` with n = min(threads, workers) concurrent ONNX Runtime calls of its own
        (explain): it holds n inference workers for its whole run, so the process never runs more
        calls at once than `workers`. One wide request gathers its workers at a time, so two
        cannot each hold part of what the other waits for."""
        with self.admitted():
            wanted = max(1, min(threads, self.workers))
            borrowers = [object() for _ in range(wanted)]
            async with self.gathering:
                for taken, borrower in enumerate(borrowers):
                    try:
                        await self.limiter.acquire_on_behalf_of(borrower)
                    except BaseException:
                        for held in borrowers[:taken]:
                            self.limiter.release_on_behalf_of(held)
                        raise
            try:
                return await self.threads.run(fn, *args, wanted)
            finally:
                for borrower in borrowers:
                    self.limiter.release_on_behalf_of(borrower)

    def batcher(self, model: ServedModel) -> Batcher:
        if model.name not in self.batchers:
            self.batchers[model.name] = Batcher(model, self.limiter, self.threads, self.max_batch, self.batch_wait_s)
        return self.batchers[model.name]

    async def classify(self, files: Sequence[tuple[str | None, bytes]], model: ServedModel, top_k: int,
                       max_pixels: int) -> list[Prediction]:  # fmt: skip
        """Decode in the thread pool (beside inference, not behind it), then one inference through
        the model's batcher, which joins it with whatever else waits for that model. Small uploads
        that find the model idle are decoded on the inference worker instead, in one hand-off;
        a request alone in the service runs on every core, and from the event loop itself when
        its decode is light (Batcher.infer_now)."""
        with self.admitted():
            batcher, alone = self.batcher(model), self.alone()
            decode = partial(decode_batch, files, model.image_size, max_pixels)
            images = None
            if sum(len(data) for _, data in files) > DECODE_ON_WORKER:
                images = await self.threads.limited(self.decoders, decode)
            # A large upload arrives decoded: the worker is handed its images as they are.
            light = (alone and self.one_client()
                     and (images is not None or all(light_to_decode(data, model.image_size) for _, data in files)))  # fmt: skip
            done = await batcher.infer_now(decode if images is None else partial(np.asarray, images), alone, light)
            if done is None:
                if images is None:
                    images = await self.threads.limited(self.decoders, decode)
                done = await batcher.infer(images)
        return predictions(model, done.probabilities, done.seconds, top_k)

    async def classify_each(self, files: Sequence[tuple[str | None, bytes]], model: ServedModel, top_k: int,
                            max_pixels: int) -> list[Prediction | ImageError]:  # fmt: skip
        """Several files, each answered on its own: a Prediction, or the ImageError that refused
        that file. The readable ones go through inference together."""
        with self.admitted():
            decoded = await self.threads.limited(self.decoders, decode_each, files, model.image_size, max_pixels)
            good = [d for d in decoded if isinstance(d, np.ndarray)]
            done = await self.batcher(model).infer(np.stack(good)) if good else None
        answers = iter(predictions(model, done.probabilities, done.seconds, top_k) if done else [])
        return [next(answers) if isinstance(d, np.ndarray) else d for d in decoded]


@dataclass(frozen=True)
class Service:
    """What an upload route needs, as one dependency: Litestar resolves several independent
    dependencies of a handler concurrently, a task each, which cost more per request than the
    rest of the service's own path (benchmarks/RESULTS.md, "Where the overhead goes")."""

    store: ModelStore
    settings: Settings
    queue: InferenceQueue


def shed_early(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: admit an API upload (it holds a place in the queue until answered) or,
    when the queue is full, refuse it before its body is parsed. A refusal must cost far less than
    an answer, or under overload the event loop spends the cores parsing uploads it then refuses
    (refusing here instead of in `run` multiplied the refusals a second the server could make;
    benchmarks/RESULTS.md, "Overload", has what the accepted requests' latency does). The page's
    routes take their place in `run`, so that a person sees the refusal in the page."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        queue = getattr(scope["app"].state, "queue", None) if scope["type"] == "http" else None
        if queue is None or scope["method"] != "POST" or not scope["path"].startswith("/api/"):
            await app(scope, receive, send)
            return
        if queue.full():
            error = queue.refusal()
            body = json.dumps({"status": error.status, "error": error.error, "message": error.message}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                    (b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        # The place is taken when the body has arrived, not before: a client that sends its body
        # slowly (or never) holds no place that a ready request could use (limits.py times it out).
        holding: float | None = None  # when the place was taken

        async def receive_then_admit() -> Message:
            nonlocal holding
            message = await receive()
            if holding is None and message["type"] == "http.request" and not message.get("more_body", False):
                if queue.full():
                    raise queue.refusal()
                holding = queue.take(scope.get("client"))
                _ADMITTED.set(True)  # this request's task: `admitted` then takes no second place
            return message

        try:
            await app(scope, receive_then_admit, send)
        finally:
            if holding is not None:
                queue.release(holding)

    return middleware


def served(store: ModelStore, name: str | None) -> ServedModel:
    """The named model (the default for None); 503 while loading, 400 for an unknown name."""
    if not store.ready:
        raise NotReadyError(store.error)
    return store.get(name)


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The file's bytes, refusing one over the per-file limit."""
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ServiceError(413, "payload_too_large",
                           f"{upload.filename or 'The file'} is larger than the limit of {settings.max_upload_bytes:,} bytes.")  # fmt: skip
    return data


def class_index(model: ServedModel, label: str | None) -> int | None:
    """The index of the class named `label` (None stays None); 400 for a name the model lacks."""
    if label is None:
        return None
    if label not in model.classes:
        raise ServiceError(
            400, "unknown_label", f"No class named {label!r}; the classes are: {', '.join(model.classes)}."
        )
    return model.classes.index(label)


async def explain_upload(queue: InferenceQueue, upload: UploadFile, model: ServedModel, label: str | None,
                         settings: Settings) -> Explanation:  # fmt: skip
    """An upload's explanation, computed in the inference pool (the page uses it too)."""
    index = class_index(model, label)
    payload = await read_upload(upload, settings)
    return await queue.run_wide(explain_bytes, settings.explain_threads, payload, model, index, settings.explain_size,
                                settings.max_pixels)  # fmt: skip
