"""What the JSON API, the page and explain share: the chosen model, the upload's bytes, and
inference off the event loop behind a bounded queue.

The queue bound is the overload guard: past `max_queue` requests waiting for an inference
worker, a request is refused at once with 503 and Retry-After instead of waiting its turn.
A client, a load balancer or an autoscaler can act on a quick refusal; an answer that comes
seconds late helps nobody.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from anyio import CapacityLimiter, to_thread
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import Counter, Gauge

from cifar_onnx.errors import NotReadyError, ServiceError
from cifar_onnx.explain import Explanation, explain_bytes
from cifar_onnx.registry import ModelStore, ServedModel
from cifar_onnx.settings import Settings

T = TypeVar("T")
MULTIPART = RequestEncodingType.MULTI_PART

SHED = Counter("cifar_onnx_shed_requests", "Requests refused with 503 because the inference queue was full.")
WAITING = Gauge("cifar_onnx_inference_waiting", "Requests waiting for an inference worker.")


class OverloadedError(ServiceError):
    def __init__(self, waiting: int):
        super().__init__(503, "overloaded", f"The service is at capacity ({waiting} requests already waiting); "
                                            "retry in a moment.")  # fmt: skip


class InferenceQueue:
    """`workers` inference calls at once in the thread pool, at most `max_queue` waiting behind
    them. Made on the event loop (anyio's limiter needs one)."""

    def __init__(self, workers: int, max_queue: int):
        self.limiter = CapacityLimiter(workers)
        self.max_queue = max_queue
        WAITING.set_function(lambda: self.limiter.statistics().tasks_waiting)

    def waiting_if_full(self) -> int | None:
        """How many wait, when every worker is busy and the queue is at its bound; else None."""
        stats = self.limiter.statistics()
        if stats.borrowed_tokens >= self.limiter.total_tokens and stats.tasks_waiting >= self.max_queue:
            return stats.tasks_waiting
        return None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        waiting = self.waiting_if_full()
        if waiting is not None:
            SHED.inc()
            raise OverloadedError(waiting)
        return await to_thread.run_sync(fn, *args, limiter=self.limiter)


def shed_early(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: refuse an API upload while the queue is full before its body is parsed.
    A refusal must cost far less than an answer, or under overload the event loop spends the
    cores parsing uploads it then refuses (measured at 256 connections that retry at once: about
    500 refusals a second with the check only in `run`, about 1,700 with this; benchmarks/
    RESULTS.md has what the accepted requests' latency does). The page's routes keep the check
    in `run`, so that a person sees the refusal in the page."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/api/"):
            queue = getattr(scope["app"].state, "queue", None)
            waiting = queue.waiting_if_full() if queue is not None else None
            if waiting is not None:
                SHED.inc()
                error = OverloadedError(waiting)
                body = json.dumps({"status": error.status, "error": error.error, "message": error.message}).encode()
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                        (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

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
        raise ServiceError(400, "unknown_label", f"No class named {label!r}; the classes are: {', '.join(model.classes)}.")
    return model.classes.index(label)


async def explain_upload(queue: InferenceQueue, upload: UploadFile, model: ServedModel, label: str | None,
                         settings: Settings) -> Explanation:  # fmt: skip
    """An upload's explanation, computed in the inference pool (the page uses it too)."""
    index = class_index(model, label)
    payload = await read_upload(upload, settings)
    return await queue.run(explain_bytes, payload, model, index, settings.explain_size, settings.explain_threads,
                           settings.max_pixels)  # fmt: skip
