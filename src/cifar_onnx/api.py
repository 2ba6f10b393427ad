"""The JSON API: /api/v1/predict, /api/v1/predict/batch, /api/v1/explain, /api/v1/models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.datastructures import ResponseHeader, UploadFile
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import Body, Parameter

from cifar_onnx.classify import Prediction
from cifar_onnx.errors import NotReadyError, ServiceError, error_responses, image_error
from cifar_onnx.registry import ModelStore, public_metadata
from cifar_onnx.serving import MULTIPART, Service, explain_upload, read_upload, served

TopK = Annotated[int, Parameter(ge=1, le=10, description="How many classes to return, most probable first.")]
ModelName = Annotated[
    str | None, Parameter(description="A served model's name (GET /api/v1/models); default: the default model.")
]
LabelName = Annotated[
    str | None, Parameter(description="The class to explain, by name (e.g. `cat`); default: the predicted class.")
]


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
class FileError:
    """A file of a batch that could not be classified, and why (the same codes as a whole request's)."""

    filename: str
    status: int
    error: str
    message: str


@dataclass(frozen=True)
class BatchResult:
    results: list[NamedPrediction | FileError]  # in upload order; an entry with `error` is a file refused
    model: str
    inference_ms: float | None  # the one model call; null when no file could be read
    failed: int  # how many entries are errors


@dataclass(frozen=True)
class ModelInfo:
    name: str
    default: bool
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ModelList:
    default: str
    models: list[ModelInfo]


PNG_ANSWER = {200: ResponseSpec(data_container=bytes, media_type="image/png", generate_examples=False,
                                description="The upload's centre square (the part the model sees) at `explain_size` "
                                            "pixels a side, with the evidence for the class drawn over it: red where "
                                            "covering the image lowers the class's probability most.")}  # fmt: skip


class PredictionController(Controller):
    path = "/api/v1"
    tags = ["prediction"]

    @post("/predict", status_code=200, summary="Classify one image",
          responses=error_responses(400, 408, 413, 415, 422, 500, 503))  # fmt: skip
    async def predict(self, data: Annotated[PredictForm, Body(media_type=MULTIPART)], service: NamedDependency[Service],
                      top_k: TopK = 3, model: ModelName = None) -> Prediction:  # fmt: skip
        """Upload one image as the multipart field `file`; get the most likely class and the top-k.
        Probabilities are calibrated (temperature-scaled); `unsure` says when the top one is too low
        to trust: the photo may show none of the ten classes."""
        chosen = served(service.store, model)
        payload = await read_upload(data.file, service.settings)
        return (await service.queue.classify([(None, payload)], chosen, top_k, service.settings.max_pixels))[0]

    @post("/predict/batch", status_code=200, summary="Classify several images in one model call",
          responses=error_responses(400, 408, 413, 415, 422, 500, 503))  # fmt: skip
    async def predict_batch(self, data: Annotated[BatchForm, Body(media_type=MULTIPART)], service: NamedDependency[Service],
                            top_k: TopK = 3, model: ModelName = None) -> BatchResult:  # fmt: skip
        """Upload up to `max_batch_files` images as repeated multipart fields `files`. Each file is
        answered on its own, in upload order: a prediction, or (for a file that cannot be read) an
        entry with its `status`, `error` code and `message`; the readable files go through the model
        in one call. The request as a whole fails only when it is malformed (no files, too many,
        over the size limits) or the service cannot serve it (503)."""
        store, settings, queue = service.store, service.settings, service.queue
        chosen = served(store, model)
        uploads = data.files if isinstance(data.files, list) else [data.files]
        if not uploads:
            raise ServiceError(400, "no_file", "Send at least one image in the multipart field 'files'.")
        if len(uploads) > settings.max_batch_files:
            raise ServiceError(400, "too_many_files",
                               f"{len(uploads)} files sent; the limit is {settings.max_batch_files} per request.")  # fmt: skip
        names = [u.filename or f"file{i}" for i, u in enumerate(uploads)]
        payloads = [await read_upload(u, settings) for u in uploads]
        answers = await queue.classify_each(
            list(zip(names, payloads, strict=False)), chosen, top_k, settings.max_pixels
        )
        results: list[NamedPrediction | FileError] = [
            NamedPrediction(**vars(a), filename=name) if isinstance(a, Prediction)
            else FileError(name, **vars(image_error(a))) for a, name in zip(answers, names, strict=False)
        ]  # fmt: skip
        times = [r.inference_ms for r in results if isinstance(r, NamedPrediction)]
        return BatchResult(results, chosen.name, times[0] if times else None, len(results) - len(times))

    @post("/explain", status_code=200, summary="Where the model looked: a heat map over the image",
          media_type="image/png", responses={**PNG_ANSWER, **error_responses(400, 408, 413, 415, 422, 500, 503)},
          response_headers=[ResponseHeader(name="X-Explained-Class", description="The class the map explains.", documentation_only=True),
                            ResponseHeader(name="X-Class-Probability", description="Its calibrated probability.", documentation_only=True)])  # fmt: skip
    async def explain(self, data: Annotated[PredictForm, Body(media_type=MULTIPART)], service: NamedDependency[Service],
                      model: ModelName = None, label: LabelName = None) -> Response[bytes]:  # fmt: skip
        """Upload one image as the multipart field `file`; get a PNG of it with the evidence for
        `label` (default: the predicted class) drawn over it. Occlusion sensitivity: each patch of
        a 4x4 grid over the model's input is covered in turn, and the drop of the class's
        probability is the patch's evidence. Works for every served model, ensembles included."""
        found = await explain_upload(service.queue, data.file, served(service.store, model), label, service.settings)
        return Response(found.png, media_type="image/png",
                        headers={"X-Explained-Class": found.label, "X-Class-Probability": f"{found.probability:.6f}"})  # fmt: skip

    @get("/models", summary="The served models and their metadata", responses=error_responses(500, 503))
    async def models(self, store: NamedDependency[ModelStore]) -> ModelList:
        """Each served model with the public part of its metadata (classes, input contract,
        accuracy, calibration, unsure threshold, provenance in words) and how its int8 operators
        run on this server."""
        if not store.ready:
            raise NotReadyError(store.error)
        infos = [ModelInfo(m.name, m.name == store.default_name, {**public_metadata(m.metadata), "int8_mode": m.int8_mode})
                 for m in store.models.values()]  # fmt: skip
        return ModelList(store.default_name, infos)
