"""Every setting of the service in one place, each from an environment variable CIFAR_ONNX_*."""

from __future__ import annotations

import difflib
import logging
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
    # Requests allowed to wait for an inference worker; past it, 503 at once (overload shedding).
    max_queue: int = 32  # measured with python -m benchmarks.overload (benchmarks/RESULTS.md)
    # Dynamic batching: a free inference worker takes up to this many waiting images of one model
    # as one call (cifar_onnx.batching; chosen with benchmarks, RESULTS.md), after waiting
    # batch_wait_ms for company (0: never wait).
    max_batch: int = 8
    batch_wait_ms: float = 0.0
    explain_size: int = 256  # side of the explain PNG, pixels
    explain_threads: int = field(default_factory=usable_cpus)  # concurrent ORT calls one explain request splits into
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # uvicorn processes
    log_level: str = "info"
    log_format: str = "text"  # or json: one object a line

    def __post_init__(self) -> None:
        problems = [f"CIFAR_ONNX_{name.upper()}={getattr(self, name)!r}: {rule}"
                    for name, (check, rule) in _RULES.items() if not check(getattr(self, name))]  # fmt: skip
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


def _at_least(low: float) -> tuple[Callable[[object], bool], str]:
    return (lambda v: isinstance(v, (int, float)) and v >= low), f"must be a number >= {low:g}"


def _one_of(*allowed: str) -> tuple[Callable[[object], bool], str]:
    return (lambda v: v in allowed), f"must be one of {', '.join(allowed)}"


_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "max_upload_bytes": _at_least(1), "max_request_bytes": _at_least(1), "max_pixels": _at_least(1),
    "decode_budget_pixels": _at_least(1), "max_body_bytes_in_flight": _at_least(1),
    "max_batch_files": _at_least(1), "intra_op_threads": _at_least(1), "inference_workers": _at_least(1),
    "max_queue": _at_least(0), "max_batch": _at_least(1), "batch_wait_ms": _at_least(0),
    "explain_size": _at_least(32), "explain_threads": _at_least(1), "workers": _at_least(1),
    "port": ((lambda v: isinstance(v, int) and 0 < v < 65536), "must be a port number, 1 to 65535"),
    "int8_fusion": _one_of("auto", "on", "off"),
    "log_level": _one_of("critical", "error", "warning", "info", "debug", "trace"),
    "log_format": _one_of("text", "json"),
}  # fmt: skip
