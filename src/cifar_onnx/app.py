"""The app factory: `create_app(settings)` wires settings, the model store and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.prometheus import PrometheusConfig
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from cifar_onnx import __version__, layout, preprocess
from cifar_onnx.api import PredictionController
from cifar_onnx.errors import exception_handlers, json_error
from cifar_onnx.health import HealthController, MetricsController
from cifar_onnx.limits import upload_limits
from cifar_onnx.logs import log, logging_config, request_ids
from cifar_onnx.memory import release_large_allocations
from cifar_onnx.registry import ModelError, ModelStore, check_models
from cifar_onnx.serving import InferenceQueue, Service, shed_early
from cifar_onnx.settings import Settings
from cifar_onnx.web import PageController


def create_app(settings: Settings | None = None, wait_for_models: bool = False) -> Litestar:
    """Build the app. Models load in a background thread at start-up (so /health/live answers
    at once and /health/ready turns 200 when they are warm); `wait_for_models` blocks start-up
    until then instead, which tests and the CLI prefer."""
    settings = settings or Settings.from_env()
    try:  # configuration errors stop the process here, with one line, instead of a service that never gets ready
        check_models(settings.model_dir, settings.default_model)
    except ModelError as exc:
        raise SystemExit(f"cifar-onnx: {exc}") from None
    store = ModelStore.serving(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        """Start: settings and layout logged, the decode budget, the inference queue (made on the event
        loop, as anyio's limiter needs), the models loading. Stop (requests drained): threads let go."""
        release_large_allocations()  # big decodes' memory returns to the system (cifar_onnx.memory)
        log.info("settings: %s", ", ".join(f"{k}={v}" for k, v in vars(settings).items()))
        log.info("%s", layout.describe(settings))
        preprocess.BUDGET = preprocess.DecodeBudget(settings.decode_budget_pixels)
        app.state.queue = InferenceQueue(
            settings.inference_workers,
            settings.max_queue,
            settings.max_batch,
            settings.batch_wait_ms,
            settings.max_wait_ms,
        )
        app.state.service = Service(store, settings, app.state.queue)
        if wait_for_models:
            store.load()
        else:
            store.load_in_background()
        yield
        app.state.queue.threads.executor.shutdown(wait=False)  # idle worker threads go with the app

    def provide_service(state: State) -> Service:
        return state.service

    static = Path(settings.web_dir) / "static"
    swagger = SwaggerRenderPlugin(
        js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
        css_url="/static/vendor/swagger-ui/swagger-ui.css",
        standalone_preset_js_url="/static/vendor/swagger-ui/swagger-ui-standalone-preset.js",
        path="/",
    )
    return Litestar(
        route_handlers=[
            PredictionController,
            HealthController,
            MetricsController,
            PageController,
            create_static_files_router(path="/static", directories=[static], include_in_schema=False),
        ],
        dependencies={
            "store": Provide(lambda: store, sync_to_thread=False),
            "service": Provide(provide_service, sync_to_thread=False),
        },
        state=State({"store": store, "settings": settings}),
        lifespan=[lifespan],
        plugins=[HTMXPlugin()],
        exception_handlers=exception_handlers(json_error),
        request_max_body_size=settings.max_request_bytes,
        multipart_form_part_limit=settings.max_batch_files + 16,
        template_config=TemplateConfig(directory=Path(settings.web_dir) / "templates", engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(
            title="cifar-onnx",
            version=__version__,
            description="Classify an image into the ten CIFAR-10 classes with an int8 ONNX model.",
            path="/schema",
            render_plugins=[swagger],
        ),
        # Prometheus outermost, so that requests refused by shed_early are counted too.
        # Request ids first, so that every line of a request (refusals included) carries one.
        middleware=[
            request_ids,
            PrometheusConfig(app_name="cifar_onnx", prefix="cifar_onnx", group_path=True).middleware,
            shed_early,
            upload_limits(settings),
        ],
        logging_config=logging_config(settings.log_level, settings.log_format),
    )
