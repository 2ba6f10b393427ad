"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.plugins.prometheus import PrometheusController

from cifar_onnx.registry import ModelStore


@dataclass(frozen=True)
class Health:
    status: str  # live | ready | loading | failed
    models: list[str]
    error: str | None = None


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up and its models have not failed to load",
         responses={503: ResponseSpec(data_container=Health, description="Loading the models failed: restart me.")})  # fmt: skip
    async def live(self, store: NamedDependency[ModelStore]) -> Response[Health]:
        # A load that failed never mends by waiting: an orchestrator should restart (or alert).
        if store.error:
            return Response(Health("failed", [], store.error), status_code=503)
        return Response(Health("live", []))

    @get("/ready", summary="Models loaded and warmed up",
         responses={503: ResponseSpec(data_container=Health, description="Still loading, or loading failed.")})  # fmt: skip
    async def ready(self, store: NamedDependency[ModelStore]) -> Response[Health]:
        if store.ready:
            return Response(Health("ready", list(store.models)))
        status = "failed" if store.error else "loading"
        return Response(Health(status, [], store.error), status_code=503)


class MetricsController(PrometheusController):
    """Prometheus text format: requests by route and status, latency histograms, inference time."""

    path = "/metrics"
    include_in_schema = False
