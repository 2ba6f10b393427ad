"""Every refusal as one shape: a status, a stable machine-readable code and a sentence for people.

API routes answer JSON (`ErrorBody`); page routes answer the page's error fragment instead.
Nothing leaks a stack trace; an unexpected failure is logged and answered 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from cifar_onnx.metrics import shed
from cifar_onnx.preprocess import (
    CorruptImageError,
    DecoderBusyError,
    ImageError,
    TooManyPixelsError,
    UnsupportedImageError,
)
from cifar_onnx.registry import UnknownModelError

log = logging.getLogger("cifar_onnx")


@dataclass(frozen=True)
class ErrorBody:
    status: int
    error: str  # stable code: bad_request, no_file, too_many_files, payload_too_large, ...
    message: str  # a sentence that says what was wrong and what to send instead


class ServiceError(HTTPException):
    """A refusal raised by our own code: an HTTP error with a stable code beside its status."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(detail=message, status_code=status)
        self.status, self.error, self.message = status, error, message


class NotReadyError(ServiceError):
    """503 while the models load (retry shortly), 500 when loading failed (retrying will not help)."""

    def __init__(self, failure: str | None):
        if failure:
            super().__init__(500, "models_failed", f"The service could not load its models: {failure}.")
        else:
            super().__init__(503, "not_ready", "The model is not loaded yet. Try again shortly.")


_IMAGE_CODES = {
    UnsupportedImageError: "unsupported_media_type",
    TooManyPixelsError: "too_many_pixels",
    CorruptImageError: "corrupt_image",
    DecoderBusyError: "decoder_busy",
}


# The error responses each route documents in the OpenAPI schema.
def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    meaning = {
        400: "No file, wrong form field, too many files, or a bad parameter value (unknown model or label).",
        408: "The upload stalled or came too slowly (`request_timeout`); the connection is closed.",
        500: "The models failed to load (`models_failed`: a configuration error), or an internal error.",
        413: "An uploaded file (or the whole request) is over the size limit.",
        415: "The bytes are not an image format the service decodes (sniffed, not the content type).",
        422: "A corrupt or truncated image, or one with too many pixels.",
        503: "The model is still loading, the service is at capacity (`overloaded`), or busy decoding other large "
        "images (`decoder_busy`): retry after Retry-After seconds.",
    }
    return {s: ResponseSpec(data_container=ErrorBody, description=meaning[s]) for s in statuses}


def image_error(exc: ImageError, request: Request | None = None) -> ErrorBody:
    if isinstance(exc, DecoderBusyError):
        shed("decoder")
    return ErrorBody(exc.status_code, _IMAGE_CODES.get(type(exc), "bad_image"), str(exc))


def _service_error(exc: ServiceError, request: Request) -> ErrorBody:
    return ErrorBody(exc.status, exc.error, exc.message)


def _unknown_model(exc: UnknownModelError, request: Request) -> ErrorBody:
    return ErrorBody(400, "unknown_model", str(exc.args[0]))


def _validation(exc: ValidationException, request: Request) -> ErrorBody:
    return ErrorBody(400, "bad_request", _explain_validation(exc, request))


def _http(exc: HTTPException, request: Request) -> ErrorBody:
    """Litestar's own refusals (routing, body size, its 400s) in our shape."""
    if exc.status_code == 400:
        return _validation(exc, request)
    if exc.status_code == 413:
        limit = request.route_handler.resolve_request_max_body_size() if "route_handler" in request.scope else None
        where = f" of {limit:,} bytes" if limit else ""
        return ErrorBody(413, "payload_too_large", f"The request is larger than the limit{where}.")
    return ErrorBody(exc.status_code, _code_for(exc.status_code), str(exc.detail))


def _internal(exc: Exception, request: Request) -> ErrorBody:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ErrorBody(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "An internal error occurred; it has been logged."
    )


# One translation per error type; Litestar (and `to_error`) pick the most specific one by the
# exception's class hierarchy, so a new error type is a new entry, not another branch.
TRANSLATIONS: dict[type[Exception], Callable[[Any, Request], ErrorBody]] = {
    ServiceError: _service_error,
    ImageError: image_error,
    UnknownModelError: _unknown_model,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _internal,
}


def to_error(exc: Exception, request: Request) -> ErrorBody:
    """The body an exception is answered with: its most specific translation."""
    translate = next(TRANSLATIONS[cls] for cls in type(exc).__mro__ if cls in TRANSLATIONS)
    return translate(exc, request)


def _code_for(status: int) -> str:
    return {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")


def _explain_validation(exc: HTTPException, request: Request) -> str:
    """Litestar's validation messages name fields; on the upload routes, say what to send."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    in_body = not extra or any(isinstance(i, dict) and i.get("source") == "body" for i in extra)
    if in_body and request.url.path.endswith("/predict/batch"):
        return "Send the images as multipart/form-data, one or more file fields named 'files'."
    if in_body and request.url.path.endswith("/predict"):
        return "Send the image as multipart/form-data, in a file field named 'file'."
    details = "; ".join(f"{item.get('key')}: {item.get('message')}" for item in extra if isinstance(item, dict))
    return f"{exc.detail}{': ' + details if details else ''}"


def error_headers(exc: Exception, status: int) -> dict[str, str]:
    """Headers the status requires: Allow on a 405 (RFC 9110), Retry-After on a 503 (loading or overloaded)."""
    headers = dict(getattr(exc, "headers", None) or {}) if isinstance(exc, HTTPException) else {}
    if status == 503:
        headers["Retry-After"] = "1"
    return headers


Render = Callable[[Request, Exception, ErrorBody], Response]


def exception_handlers(render: Render) -> dict[type[Exception], Callable[[Request, Exception], Response]]:
    """A handler per error type, each translating with its own entry and answering with `render`
    (JSON for the API, the page's error fragment for the page)."""

    def handler_for(translate: Callable[[Any, Request], ErrorBody]) -> Callable[[Request, Exception], Response]:
        def handle(request: Request, exc: Exception) -> Response:
            return render(request, exc, translate(exc, request))

        return handle

    return {cls: handler_for(translate) for cls, translate in TRANSLATIONS.items()}


def json_error(request: Request, exc: Exception, body: ErrorBody) -> Response[ErrorBody]:
    return Response(body, status_code=body.status, media_type=MediaType.JSON, headers=error_headers(exc, body.status))
