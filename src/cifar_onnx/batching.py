"""Dynamic batching: when an inference worker becomes free, it takes every request waiting for
the same model, up to `max_batch` images, as one ONNX Runtime call.

At low load nothing waits: a request that finds a worker free runs at once, alone (an optional
`wait_s` lets a worker wait that long for company first), and `infer_now` makes its images in the
same hand-off to the worker thread as its inference. Under load the requests that queued
while the workers were busy go through together, and one call on N images costs far less than N
calls on one (benchmarks/RESULTS.md). Each image's answer is the one it gets alone: the graph
treats the rows of a batch independently (tests/test_batching.py checks it).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from anyio import CapacityLimiter, WouldBlock

from cifar_onnx.classify import timed_predict
from cifar_onnx.logs import REQUEST_ID
from cifar_onnx.registry import ServedModel
from cifar_onnx.threads import Threads

log = logging.getLogger("cifar_onnx")


@dataclass(frozen=True)
class Inference:
    probabilities: np.ndarray  # this request's rows, calibrated
    seconds: float  # the ONNX Runtime call it was part of
    batch_images: int  # how many images that call had


@dataclass
class Batcher:
    """One per model. `workers` is the limiter all models share: the number of ONNX Runtime calls
    at once; each model has at most that many drains running."""

    model: ServedModel
    workers: CapacityLimiter
    threads: Threads
    max_batch: int  # Settings.max_batch
    wait_s: float = 0.0
    pending: deque[tuple[np.ndarray, asyncio.Future[Inference]]] = field(default_factory=deque)
    ids: dict[int, str] = field(default_factory=dict)  # id(future) -> its request's id, for the logs
    draining: int = 0

    async def infer(self, images: np.ndarray) -> Inference:
        future: asyncio.Future[Inference] = asyncio.get_running_loop().create_future()
        self.ids[id(future)] = REQUEST_ID.get()
        future.add_done_callback(lambda done: self.ids.pop(id(done), None))
        self.pending.append((images, future))
        if self.draining < self.workers.total_tokens:
            self.draining += 1
            # A fresh context: the drain serves many requests, so it must not carry the request
            # id (or anything else) of the one that happened to start it.
            asyncio.get_running_loop().create_task(self._drain(), context=contextvars.Context())
        return await future

    async def infer_now(self, make_images: Callable[[], np.ndarray], alone: bool = False,
                        light: bool = False) -> Inference | None:  # fmt: skip
        """When no request waits for this model, no batching wait is set and a worker is free:
        `make_images()` (decoding the upload) and the inference on that worker in one hand-off,
        instead of one hand-off to decode and another to infer. None, and nothing run, otherwise.
        Each hand-off costs thread wake-ups, on a virtual machine's cores a large part of the
        service's own path (benchmarks/RESULTS.md, "Where the overhead goes").
        A request `alone` in the service (the caller knows) that finds every worker idle takes all
        their places and runs on the model's lone session, on every core: its latency, not the
        throughput under load, is what counts then; a request arriving meanwhile waits for that
        one shorter call. Where the caller passes `light` (a cheap `make_images`, and one client
        sending every request: InferenceQueue.one_client), the lone call runs right here on the
        event loop: no hand-off at all, as in the bare upload floor."""
        if self.pending or self.wait_s:
            return None
        lone = alone and self.model.lone is not None and self.workers.borrowed_tokens == 0
        # Borrowers of their own: the calling task may hold another place.
        places = [object() for _ in range(int(self.workers.total_tokens) if lone else 1)]
        taken: list[object] = []
        try:
            try:
                for place in places:
                    self.workers.acquire_on_behalf_of_nowait(place)
                    taken.append(place)
            except WouldBlock:
                return None
            if lone and light:
                probs, seconds = self._make_and_predict(make_images, lone)
            else:
                probs, seconds = await self.threads.run(self._make_and_predict, make_images, lone)
        finally:
            for place in taken:  # after the thread ended: Threads.run waits for it
                self.workers.release_on_behalf_of(place)
        return Inference(probs, seconds, len(probs))

    def _make_and_predict(self, make_images: Callable[[], np.ndarray], lone: bool) -> tuple[np.ndarray, float]:
        return timed_predict(self.model, make_images(), lone)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[Inference]]]:
        """The oldest waiting requests, up to max_batch images (always at least one request)."""
        taken, count = [], 0
        while self.pending and (not taken or count + len(self.pending[0][0]) <= self.max_batch):
            images, future = self.pending.popleft()
            if not future.done():  # a client that went away is not computed for
                taken.append((images, future))
                count += len(images)
        return taken

    async def _drain(self) -> None:
        """Serve the waiting requests until none is left. Whatever fails in one round (the model,
        joining the images, handing out the rows) fails the requests of that round, each with the
        error, and the loop goes on: a drain never dies with requests waiting on it."""
        try:
            while self.pending:
                taken: list[tuple[np.ndarray, asyncio.Future[Inference]]] = []
                try:
                    async with self.workers:
                        if self.wait_s:
                            await asyncio.sleep(self.wait_s)
                        taken = self._take()
                        if not taken:
                            continue
                        batch = np.concatenate([images for images, _ in taken])
                        probs, seconds = await self.threads.run(timed_predict, self.model, batch)
                    start = 0
                    for images, future in taken:
                        if not future.done():
                            future.set_result(Inference(probs[start : start + len(images)], seconds, len(batch)))
                        start += len(images)
                except Exception as exc:  # every request of the round hears it; the others are still served
                    ids = [self.ids.get(id(future), "-") for _, future in taken]
                    log.exception("inference on %s failed; answering 500 to request(s) %s", self.model.name,
                                  ", ".join(ids))  # fmt: skip
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
        finally:
            self.draining -= 1
