"""Every setting of the service in one place, each from an environment variable CIFAR_ONNX_*."""

from __future__ import annotations

import difflib
import itertools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from cifar_onnx.cpu import usable_cpus
from cifar_onnx.preprocess import DEFAULT_MAX_PIXELS

log = logging.getLogger("cifar_onnx")
_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parent.parent


def _first_existing(*candidates: Path) -> Path:
    """The installed wheel carries model/ and web/ inside the package; a source checkout has
    them at the top of the repository."""
    return next((p for p in candidates if p.exists()), candidates[-1])


@dataclass(frozen=True)
class Settings:
    model_dir: Path = field(default_factory=lambda: _first_existing(_PACKAGE / "model", _REPO / "model"))
    web_dir: Path = field(default_factory=lambda: _first_existing(_PACKAGE / "web", _REPO / "web"))
    default_model: str = ""  # empty: the model whose metadata says "default": true, else the first
    max_upload_bytes: int = 10 * 1024 * 1024  # per file
    max_request_bytes: int = 64 * 1024 * 1024  # a whole request (a batch of files)
    # Request bodies held at once by the upload routes (cifar_onnx.limits); past it, 503 at once.
    max_body_bytes_in_flight: int = 64 * 1024 * 1024
    # Memory per image and in total: pixels one upload may decode to (checked from the header,
    # after a JPEG's cheap DCT scaling), and pixels being decoded at once by the whole process
    # (a decode waits for room, 503 after 5 s). Sized so that a pod with every model loaded stays
    # under its memory limit with the queue full of the costliest uploads (README, "Configuration";
    # tests/test_hardening.py measures it).
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_budget_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_files: int = 64
    intra_op_threads: int = 1  # per ONNX Runtime call: 1 gives the best throughput under load
    # Fused integer kernels for the int8 models: auto uses them where a self-check at load shows
    # they compute what the reference kernels do (cifar_onnx.registry.make_session); on/off force it.
    int8_fusion: str = "auto"
    inference_workers: int = field(default_factory=usable_cpus)  # concurrent inference calls (container's CPUs)
    # ONNX Runtime threads for a request to the default model that finds every inference worker
    # idle: alone, it gets every core (cifar_onnx.batching; benchmarks/RESULTS.md has what it buys). 1 turns it off.
    lone_request_threads: int = field(default_factory=usable_cpus)
    # Requests allowed to wait for an inference worker; past it, 503 at once (overload shedding).
    max_queue: int = 32  # measured with python -m benchmarks.overload (benchmarks/RESULTS.md)
    # Admission by time as well as count: a request is refused (503) while a queue stands longer
    # than this (every request answered in the last second stayed inside longer; serving.py,
    # StandingDelay). It bounds the latency of answered requests on any CPU; the count alone
    # allowed seconds on a slow one.
    max_wait_ms: float = 500.0
    # Dynamic batching: a free inference worker takes up to this many waiting images of one model
    # as one call (cifar_onnx.batching; chosen with benchmarks, RESULTS.md), after waiting
    # batch_wait_ms for company (0: never wait).
    max_batch: int = 8
    batch_wait_ms: float = 0.0
    # Upload bodies are read against deadlines (cifar_onnx.limits): a client that stalls, or
    # trickles bytes, is answered 408 and its connection closed, so it cannot hold memory or
    # queue places that others need. Each chunk within body_idle_s; after that long, at least
    # body_min_rate bytes a second on average; the whole body within body_timeout_s.
    body_idle_s: float = 5.0
    body_min_rate: int = 16 * 1024
    body_timeout_s: float = 60.0
    explain_size: int = 256  # side of the explain PNG, pixels
    explain_threads: int = field(default_factory=usable_cpus)  # concurrent ORT calls one explain request splits into
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # uvicorn processes
    log_level: str = "info"
    log_format: str = "text"  # or json: one object a line

    def __post_init__(self) -> None:
        # Names of levels are case-insensitive (INFO as well as info), as logging's own are.
        object.__setattr__(self, "log_level", str(self.log_level).lower())
        problems = [f"CIFAR_ONNX_{name.upper()}={getattr(self, name)!r}: {rule}"
                    for name, (check, rule) in _RULES.items() if not check(getattr(self, name))]  # fmt: skip
        # Each request limit must fit inside the next: one file, one request, all bodies at once.
        order = ("max_upload_bytes", "max_request_bytes", "max_body_bytes_in_flight")
        problems += [f"CIFAR_ONNX_{a.upper()}={getattr(self, a)} must not exceed CIFAR_ONNX_{b.upper()}={getattr(self, b)}"
                     for a, b in itertools.pairwise(order) if getattr(self, a) > getattr(self, b)]  # fmt: skip
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then CIFAR_ONNX_<NAME> variables, then explicit overrides. A value out of range
        stops the start with a message naming it; an unknown CIFAR_ONNX_ name is warned about."""
        environ = dict(os.environ if environ is None else environ)
        known = {f"CIFAR_ONNX_{f.name.upper()}" for f in fields(cls)}
        for name in sorted(n for n in environ if n.startswith("CIFAR_ONNX_") and n not in known | NOT_SETTINGS):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            log.warning("%s is not a setting of the service and is ignored%s", name,
                        f"; did you mean {close[0]}?" if close else "")  # fmt: skip
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f"CIFAR_ONNX_{f.name.upper()}")
            if raw is None:
                continue
            kind = (
                f.type
                if isinstance(f.type, type)
                else {"Path": Path, "int": int, "float": float, "str": str}[str(f.type)]
            )
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise SystemExit(f"CIFAR_ONNX_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except SettingsError as exc:
            raise SystemExit(str(exc)) from None


class SettingsError(ValueError):
    pass


# Variables of the project that are not the service's settings (training's cache, compose's ports).
NOT_SETTINGS = {"CIFAR_ONNX_CACHE", "CIFAR_ONNX_BIND", "CIFAR_ONNX_HOST_PORT", "CIFAR_ONNX_PROXY_PORT"}


def _between(low: float, high: float = math.inf) -> tuple[Callable[[object], bool], str]:
    """A finite number in [low, high]: inf and nan are refused (a wait of inf would hold a worker forever)."""
    rule = f"must be a finite number >= {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")

    def check(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high

    return check, rule


def _one_of(*allowed: str) -> tuple[Callable[[object], bool], str]:
    return (lambda v: v in allowed), f"must be one of {', '.join(allowed)}"


_GIB = 1024**3
_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "max_upload_bytes": _between(1, _GIB), "max_request_bytes": _between(1, 4 * _GIB),
    "max_pixels": _between(1, 1_000_000_000), "decode_budget_pixels": _between(1, 4_000_000_000),
    "max_body_bytes_in_flight": _between(1, 16 * _GIB), "max_batch_files": _between(1, 1024),
    "intra_op_threads": _between(1, 256), "inference_workers": _between(1, 256), "lone_request_threads": _between(1, 256),
    "max_queue": _between(0, 1_000_000), "max_wait_ms": _between(1, 60_000), "max_batch": _between(1, 1024), "batch_wait_ms": _between(0, 100),
    "body_idle_s": _between(0.1, 600), "body_min_rate": _between(0, _GIB), "body_timeout_s": _between(1, 3600),
    "explain_size": _between(32, 1024), "explain_threads": _between(1, 256), "workers": _between(1, 256),
    "port": ((lambda v: isinstance(v, int) and 0 < v < 65536), "must be a port number, 1 to 65535"),
    "int8_fusion": _one_of("auto", "on", "off"),
    "log_level": _one_of("critical", "error", "warning", "info", "debug", "trace"),
    "log_format": _one_of("text", "json"),
}  # fmt: skip
