"""The JSON API: /api/v1/predict, /api/v1/predict/batch, /api/v1/models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from anyio import CapacityLimiter, to_thread
from litestar import Controller, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from cifar_onnx.classify import Prediction, classify_bytes
from cifar_onnx.errors import NotReadyError, ServiceError, error_responses
from cifar_onnx.registry import ModelStore, ServedModel
from cifar_onnx.settings import Settings

MULTIPART = RequestEncodingType.MULTI_PART
TopK = Annotated[int, Parameter(ge=1, le=10, description="How many classes to return, most probable first.")]
ModelName = Annotated[str | None, Parameter(description="A served model's name (GET /api/v1/models); default: the default model.")]


@dataclass
class PredictForm:
    file: UploadFile


@dataclass
class BatchForm:
    files: list[UploadFile]


@dataclass(frozen=True)
class NamedPrediction(Prediction):
    filename: str


@dataclass(frozen=True)
class BatchResult:
    results: list[NamedPrediction]
    model: str
    inference_ms: float


@dataclass(frozen=True)
class ModelInfo:
    name: str
    default: bool
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ModelList:
    default: str
    models: list[ModelInfo]


def served(store: ModelStore, name: str | None) -> ServedModel:
    if not store.ready:
        raise NotReadyError(store.error)
    return store.get(name)


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The file's bytes, refusing one over the per-file limit."""
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ServiceError(413, "payload_too_large",
                           f"{upload.filename or 'The file'} is larger than the limit of {settings.max_upload_bytes:,} bytes.")  # fmt: skip
    return data


async def run_classify(limiter: CapacityLimiter, files: list[tuple[str | None, bytes]], model: ServedModel, top_k: int, settings: Settings) -> list[Prediction]:
    """Decode and infer in the thread pool: the event loop keeps serving meanwhile."""
    return await to_thread.run_sync(classify_bytes, files, model, top_k, settings.max_pixels, limiter=limiter)


class PredictionController(Controller):
    path = "/api/v1"
    tags = ["prediction"]

    @post("/predict", status_code=200, summary="Classify one image",
          responses=error_responses(400, 413, 415, 422, 503))  # fmt: skip
    async def predict(self, data: Annotated[PredictForm, Body(media_type=MULTIPART)], store: ModelStore,
                      settings: Settings, limiter: CapacityLimiter, top_k: TopK = 3, model: ModelName = None) -> Prediction:  # fmt: skip
        """Upload one image as the multipart field `file`; get the most likely class and the top-k."""
        chosen = served(store, model)
        payload = await read_upload(data.file, settings)
        return (await run_classify(limiter, [(None, payload)], chosen, top_k, settings))[0]

    @post("/predict/batch", status_code=200, summary="Classify several images in one model call",
          responses=error_responses(400, 413, 415, 422, 503))  # fmt: skip
    async def predict_batch(self, data: Annotated[BatchForm, Body(media_type=MULTIPART)], store: ModelStore,
                            settings: Settings, limiter: CapacityLimiter, top_k: TopK = 3,
                            model: ModelName = None) -> BatchResult:  # fmt: skip
        """Upload up to `max_batch_files` images as repeated multipart fields `files`."""
        chosen = served(store, model)
        uploads = data.files if isinstance(data.files, list) else [data.files]
        if not uploads:
            raise ServiceError(400, "no_file", "Send at least one image in the multipart field 'files'.")
        if len(uploads) > settings.max_batch_files:
            raise ServiceError(400, "too_many_files",
                               f"{len(uploads)} files sent; the limit is {settings.max_batch_files} per request.")  # fmt: skip
        names = [u.filename or f"file{i}" for i, u in enumerate(uploads)]
        payloads = [await read_upload(u, settings) for u in uploads]
        predictions = await run_classify(limiter, list(zip(names, payloads)), chosen, top_k, settings)
        results = [NamedPrediction(**vars(p), filename=name) for p, name in zip(predictions, names)]
        return BatchResult(results, chosen.name, predictions[0].inference_ms)

    @get("/models", summary="The served models and their metadata", responses=error_responses(503))
    async def models(self, store: ModelStore) -> ModelList:
        """Each served model with its metadata (classes, input contract, accuracy, provenance)."""
        if not store.ready:
            raise NotReadyError(store.error)
        infos = [ModelInfo(m.name, m.name == store.default_name, m.metadata) for m in store.models.values()]
        return ModelList(store.default_name, infos)

