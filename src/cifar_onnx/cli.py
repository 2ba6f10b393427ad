"""`cifar-onnx serve` and `cifar-onnx predict IMAGE...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cifar_onnx.settings import Settings


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    # Flags become CIFAR_ONNX_* variables so that every uvicorn worker process sees them.
    for name in ("host", "port", "workers", "model_dir"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"CIFAR_ONNX_{name.upper()}"] = str(value)
    settings = Settings.from_env()
    from cifar_onnx.registry import ModelError, check_models

    try:  # before uvicorn starts: a configuration error ends the process with one line, exit code 1
        check_models(settings.model_dir, settings.default_model)
    except ModelError as exc:
        raise SystemExit(f"cifar-onnx: {exc}") from None
    uvicorn.run("cifar_onnx.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=settings.log_level)  # fmt: skip


def predict(args: argparse.Namespace) -> int:
    """Classify the files with one model call; a table (or JSON lines); exit 1 if any file failed."""
    from cifar_onnx.classify import decode_each, predictions, timed_predict
    from cifar_onnx.registry import ModelStore, UnknownModelError

    settings = Settings.from_env(model_dir=args.model_dir)
    store = ModelStore.serving(settings, lone=False)
    store.load()
    try:
        model = store.get(args.model)
    except UnknownModelError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    files: list[tuple[str, bytes | OSError]] = []
    for path in args.images:
        try:
            files.append((path, Path(path).read_bytes()))
        except OSError as exc:
            files.append((path, exc))
    readable = [(name, data) for name, data in files if isinstance(data, bytes)]
    decoded = iter(decode_each(readable, model.image_size, settings.max_pixels))
    outcomes: list[tuple[str, object]] = [
        (name, next(decoded) if isinstance(data, bytes) else data) for name, data in files
    ]
    good = [o for _, o in outcomes if not isinstance(o, Exception)]
    answers = iter(predictions(model, *timed_predict(model, np.stack(good)), args.top_k) if good else [])
    results = [(name, o if isinstance(o, Exception) else next(answers)) for name, o in outcomes]
    for line in json_lines(results) if args.json else table(results, model.name):
        print(line)
    failed = sum(isinstance(r, Exception) for _, r in results)
    if failed and not args.json:
        print(f"{failed} of {len(results)} file(s) could not be classified", file=sys.stderr)
    return 1 if failed else 0


def json_lines(results: list[tuple[str, object]]) -> list[str]:
    out = []
    for name, r in results:
        if isinstance(r, Exception):
            out.append(json.dumps({"file": name, "error": str(r)}))
        else:
            out.append(json.dumps({"file": name, **asdict(r)}))
    return out


def table(results: list[tuple[str, object]], model: str) -> list[str]:
    """One row a file: its class and calibrated probability, UNSURE when the model is (with the
    reason under the table), the runners-up; an error in place of the answer for a bad file."""
    rows = [("file", "class", "probability", "unsure", "runners-up")]
    notes = []
    for name, r in results:
        if isinstance(r, Exception):
            rows.append((name, "error", "", "", str(r).removeprefix(f"{name}: ")))
            continue
        rest = ", ".join(f"{s.label} {s.probability:.1%}" for s in r.top_k[1:])
        rows.append((name, r.label, f"{r.confidence:.1%}", "UNSURE" if r.unsure else "", rest))
        if r.unsure:
            notes.append(f"{name}: unsure. {r.unsure_reason}")
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=False)) + "  " + row[4] for row in rows]
    return [f"model: {model}", *[line.rstrip() for line in lines], *notes]


def health(args: argparse.Namespace) -> int:
    """Exit 0 when the server answers /health/ready with 200 (the container's HEALTHCHECK)."""
    import urllib.error
    import urllib.request

    settings = Settings.from_env()
    url = args.url or f"http://127.0.0.1:{settings.port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cifar-onnx", description="CIFAR-10 classification on ONNX Runtime.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the web service (page and JSON API)")
    s.add_argument("--host", help="default 127.0.0.1 (CIFAR_ONNX_HOST)")
    s.add_argument("--port", type=int, help="default 8000 (CIFAR_ONNX_PORT)")
    s.add_argument("--workers", type=int, help="uvicorn worker processes, default 1 (CIFAR_ONNX_WORKERS)")
    s.add_argument("--model-dir", type=Path, help="folder of *.onnx + *.json (CIFAR_ONNX_MODEL_DIR)")
    p = sub.add_parser("predict", help="classify image files (a table; exit 1 if any file failed)")
    p.add_argument("images", nargs="+")
    p.add_argument("--top-k", type=int, default=3, choices=range(1, 11), metavar="1..10")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--model", help="a served model's name (default: the default model)")
    p.add_argument("--model-dir", type=Path, help="folder of *.onnx + *.json (CIFAR_ONNX_MODEL_DIR)")
    h = sub.add_parser("health", help="exit 0 if the local server is ready (for HEALTHCHECK)")
    h.add_argument("--url", help="default http://127.0.0.1:$CIFAR_ONNX_PORT/health/ready")
    h.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)
    else:
        sys.exit(predict(args) if args.command == "predict" else health(args))


if __name__ == "__main__":
    main()
