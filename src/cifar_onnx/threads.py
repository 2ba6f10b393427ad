"""The hand-off from the event loop to a worker thread (decoding, inference) and back.

asyncio's own executor hand-off, not anyio's `to_thread`: anyio's cancel scopes, task-group
bookkeeping and backend lookups cost more per call than the rest of a request's own path on a
slow CPU (benchmarks/RESULTS.md, "Where the overhead goes"). Its guarantees are kept: the call
runs in the caller's context (request ids in the logs), and a caller cancelled mid-call holds
its place in the limiter until the thread is done, so no more calls ever run than the limiter
allows (the caller holds its limiter place around `run`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from anyio import CapacityLimiter

T = TypeVar("T")


class Threads:
    def __init__(self, count: int):
        self.executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="cifar-onnx")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on a worker thread; a cancelled caller still waits for the thread to end."""
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(self.executor, context.run, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])  # the thread cannot be stopped: hold the caller's place until it ends
            raise

    async def limited(self, limiter: CapacityLimiter, fn: Callable[..., T], *args: object) -> T:
        """`run`, holding one of `limiter`'s places for the whole call."""
        async with limiter:
            return await self.run(fn, *args)
