"""Upload limits enforced while the body streams in, not after a whole request has been parsed.

Each API upload route has a body limit of its own (one image's routes far below the batch route),
checked against Content-Length before anything is read, and every multipart part is measured as
its bytes arrive: the request is refused with 413 as soon as one part passes the per-file limit.
The bodies held at once are bounded too (`max_body_bytes_in_flight`): the multipart parser keeps
a whole body in memory, so 34 admitted batch requests of 64 MiB would otherwise hold 2 GiB; past
the bound a request is refused with 503 and Retry-After. Bytes count against it as they arrive,
not as a request declares them, so a client that declares a large body and then stalls holds
nothing it has not sent.

Bodies are read against deadlines (settings `body_idle_s`, `body_min_rate`, `body_timeout_s`): a
client that stops sending, or trickles, is answered 408 and its connection closed; the bytes it
held and its queue place are freed at once.
"""

from __future__ import annotations

import asyncio
import re
import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from cifar_onnx.errors import ServiceError
from cifar_onnx.metrics import shed
from cifar_onnx.settings import Settings

MULTIPART_OVERHEAD = 16 * 1024  # a part's headers and the boundaries around it
_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.I)


def route_limit(path: str, settings: Settings) -> int | None:
    """The body limit of an API upload route (None: not an upload route)."""
    if path == "/api/v1/predict/batch":
        return settings.max_request_bytes
    if path in ("/api/v1/predict", "/api/v1/explain"):
        return settings.max_upload_bytes + MULTIPART_OVERHEAD
    return None


class PartMeter:
    """The size of each multipart part, counted as chunks arrive; a part ends where the next
    delimiter (CRLF, two dashes, the boundary) begins, which may straddle two chunks."""

    def __init__(self, boundary: bytes):
        self.delimiter = b"\r\n--" + boundary
        self.since = 0  # bytes of the current part before the kept tail
        self.tail = b""  # the last bytes, which may hold the start of a delimiter

    def feed(self, chunk: bytes) -> int:
        """Take a chunk; return the size of the largest part seen in it (the current one so far)."""
        data, pos, largest = self.tail + chunk, 0, 0
        while (found := data.find(self.delimiter, pos)) >= 0:
            largest = max(largest, self.since + found - pos)
            self.since, pos = 0, found + len(self.delimiter)
        rest = data[pos:]
        keep = min(len(rest), len(self.delimiter) - 1)
        self.since += len(rest) - keep
        self.tail = rest[len(rest) - keep :]
        return max(largest, self.since + keep)


class BodyClock:
    """The deadlines of one body: each chunk within `idle_s`, after `idle_s` an average of at
    least `min_rate` bytes a second, the whole body within `total_s`."""

    def __init__(self, settings: Settings):
        self.idle_s, self.min_rate, self.total_s = settings.body_idle_s, settings.body_min_rate, settings.body_timeout_s
        self.started = time.monotonic()

    def allowance(self, received: int) -> float:
        """Seconds the next chunk may take; <= 0: the body is already too slow."""
        elapsed = time.monotonic() - self.started
        if elapsed > self.idle_s and received < self.min_rate * elapsed:
            return 0.0
        return min(self.idle_s, self.total_s - elapsed)


def stalled(received: int) -> ServiceError:
    return ServiceError(408, "request_timeout", f"The upload stalled or came too slowly ({received:,} bytes "
                                                "received); send the whole file at once.")  # fmt: skip


def too_large(what: str, limit: int) -> ServiceError:
    return ServiceError(413, "payload_too_large", f"{what} is larger than the limit of {limit:,} bytes.")


def upload_limits(settings: Settings) -> object:
    """ASGI middleware factory for the API upload routes' limits."""
    in_flight = 0  # bytes of the bodies being received or held; only the event loop changes it

    def middleware_factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal in_flight
            limit = (
                route_limit(scope["path"], settings) if scope["type"] == "http" and scope["method"] == "POST" else None
            )
            if limit is None:
                await app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            declared = int(headers.get(b"content-length", b"0") or 0)
            if declared > limit:
                raise too_large("The request", limit)
            match = _BOUNDARY.search(headers.get(b"content-type", b""))
            meter = PartMeter(match.group(1)) if match else None
            clock = BodyClock(settings)
            received = 0

            async def metered() -> Message:
                nonlocal received, in_flight
                allowance = clock.allowance(received)
                if allowance <= 0:
                    raise stalled(received)
                try:
                    async with asyncio.timeout(allowance):  # not wait_for: the same task, the same context
                        message = await receive()
                except TimeoutError:
                    raise stalled(received) from None
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    if in_flight + len(chunk) > settings.max_body_bytes_in_flight:
                        shed("body_bytes")
                        raise ServiceError(
                            503, "overloaded", "The service is receiving other large uploads; retry in a moment."
                        )
                    received += len(chunk)
                    in_flight += len(chunk)
                    if received > limit:
                        raise too_large("The request", limit)
                    if meter and meter.feed(chunk) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
                        raise too_large("A file", settings.max_upload_bytes)
                return message

            try:
                await app(scope, metered, send)
            finally:
                in_flight -= received

        return middleware

    return middleware_factory
