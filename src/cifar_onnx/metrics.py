"""The service's own Prometheus metrics that more than one module counts."""

from __future__ import annotations

from prometheus_client import Counter

SHED = Counter(
    "cifar_onnx_shed_requests",
    "Requests refused with 503 under load, by reason: queue (places full), wait (the expected wait past "
    "max_wait_ms), body_bytes (upload bodies in flight), decoder (decode budget busy).",
    ["reason"],
)


def shed(reason: str) -> None:
    SHED.labels(reason).inc()
