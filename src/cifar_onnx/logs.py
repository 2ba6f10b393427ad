"""What the service says in its logs, and how: a request id on every line of a request, plain text
or JSON (CIFAR_ONNX_LOG_FORMAT=json), and a summary of shedding instead of a line per refusal."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from contextvars import ContextVar

from litestar.logging import LoggingConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("cifar_onnx")
REQUEST_ID: ContextVar[str] = ContextVar("cifar_onnx_request_id", default="-")
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (a dash outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, request id, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
               "request_id": getattr(record, "request_id", "-"), "message": record.getMessage()}  # fmt: skip
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out)


def logging_config(level: str, fmt: str) -> LoggingConfig:
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return LoggingConfig(
        formatters={"cifar_onnx": formatter},
        filters={"request_id": {"()": RequestIdFilter}},
        handlers={
            "cifar_onnx": {"class": "logging.StreamHandler", "formatter": "cifar_onnx", "filters": ["request_id"]}
        },
        loggers={"cifar_onnx": {"level": level.upper(), "handlers": ["cifar_onnx"], "propagate": False}},
        configure_root_logger=False,
        log_exceptions="debug",
    )


def request_ids(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: the request's X-Request-ID when it sends a sensible one, else a new one;
    set for the logs of that request and returned in the response's X-Request-ID header."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)

    return middleware


class ShedLog:
    """Refusals under overload, summarised: at most one line every `every_s` seconds."""

    def __init__(self, every_s: float = 10.0):
        self.every_s, self.count, self.since = every_s, 0, time.monotonic()
        self.last = self.since  # the latest refusal
        self.lock = threading.Lock()

    def admitted(self) -> None:
        """A request got a place: if refusals were pending and none came for a second, the burst
        is over; say how many it shed, so that its end is in the log as well as its middle."""
        if not self.count:
            return
        with self.lock:
            now = time.monotonic()
            if not self.count or now - self.last < 1.0:
                return
            count, seconds = self.count, self.last - self.since
            self.count, self.since = 0, now
        log.warning("overload over: shed %d more requests in the last %.0f s of it", count, seconds)

    def refused(self, waiting: int) -> None:
        with self.lock:
            self.count += 1
            now = self.last = time.monotonic()
            if now - self.since < self.every_s:
                return
            count, seconds = self.count, now - self.since
            self.count, self.since = 0, now
        log.warning("overloaded: shed %d requests in the last %.0f s (%d waiting now)", count, seconds, waiting)
