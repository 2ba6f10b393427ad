"""Every setting of the service in one place, each from an environment variable CIFAR_ONNX_*."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

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
    max_pixels: int = 40_000_000  # decompression-bomb guard, checked from the header
    max_batch_files: int = 64
    intra_op_threads: int = 1  # per ONNX Runtime call: 1 gives the best throughput under load
    # Fused integer kernels for the int8 models: auto uses them where a self-check at load shows
    # they compute what the reference kernels do (cifar_onnx.registry.make_session); on/off force it.
    int8_fusion: str = "auto"
    inference_workers: int = os.cpu_count() or 1  # concurrent inference calls (thread pool)
    # Requests allowed to wait for an inference worker; past it, 503 at once (overload shedding).
    max_queue: int = 32  # measured with python -m benchmarks.overload (benchmarks/RESULTS.md)
    # Dynamic batching: a free inference worker takes up to this many waiting images of one model
    # as one call (cifar_onnx.batching; chosen with benchmarks, RESULTS.md), after waiting
    # batch_wait_ms for company (0: never wait).
    max_batch: int = 32
    batch_wait_ms: float = 0.0
    explain_size: int = 256  # side of the explain PNG, pixels
    explain_threads: int = os.cpu_count() or 1  # concurrent ORT calls one explain request splits into
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # uvicorn processes
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> "Settings":
        """Defaults, then CIFAR_ONNX_<NAME> variables, then explicit overrides."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f"CIFAR_ONNX_{f.name.upper()}")
            if raw is None:
                continue
            kind = f.type if isinstance(f.type, type) else {"Path": Path, "int": int, "float": float, "str": str}[str(f.type)]
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise SystemExit(f"CIFAR_ONNX_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
