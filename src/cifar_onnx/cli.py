"""`cifar-onnx serve` and `cifar-onnx predict IMAGE...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from cifar_onnx.settings import Settings


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    # Flags become CIFAR_ONNX_* variables so that every uvicorn worker process sees them.
    for name in ("host", "port", "workers", "model_dir"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"CIFAR_ONNX_{name.upper()}"] = str(value)
    settings = Settings.from_env()
    uvicorn.run("cifar_onnx.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=settings.log_level)  # fmt: skip


def predict(args: argparse.Namespace) -> int:
    from cifar_onnx.classify import classify_bytes
    from cifar_onnx.preprocess import ImageError
    from cifar_onnx.registry import ModelStore

    settings = Settings.from_env(model_dir=args.model_dir)
    store = ModelStore(settings.model_dir, settings.intra_op_threads, settings.default_model, settings.int8_fusion)
    store.load()
    model = store.get(args.model)
    failed = 0
    for path in args.images:
        try:
            result = classify_bytes([(None, Path(path).read_bytes())], model, args.top_k, settings.max_pixels)[0]
        except (ImageError, OSError) as exc:
            failed += 1
            print(json.dumps({"file": path, "error": str(exc)}) if args.json else f"{path}: error: {exc}",
                  file=sys.stdout if args.json else sys.stderr)  # fmt: skip
            continue
        if args.json:
            print(json.dumps({"file": path, **asdict(result)}))
        else:
            ranked = ", ".join(f"{s.label} {s.probability:.1%}" for s in result.top_k)
            print(f"{path}: {result.label} ({ranked})")
    return 1 if failed else 0


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
    p = sub.add_parser("predict", help="classify image files")
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
