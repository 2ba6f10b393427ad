"""The floor of a request's cost: a bare Litestar app that parses the same multipart upload,
decodes it with the service's decoder and answers JSON, under the same uvicorn (httptools and
uvloop), with no model, no middleware, no queue. The service's own overhead (its HTTP p50 minus
its inference time) is reported as a ratio to this app's p50, measured in the same run: absolute
figures drift between machines, the ratio much less. Not shipped.

    python -m uvicorn benchmarks.floor_app:app --port 8002
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from litestar import Litestar, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from cifar_onnx.preprocess import decode_image


@dataclass
class Upload:
    file: UploadFile


@post("/api/v1/predict", status_code=200)
async def predict(data: Annotated[Upload, Body(media_type=RequestEncodingType.MULTI_PART)]) -> dict[str, object]:
    image = decode_image(await data.file.read())
    return {"label": "none", "mean": float(image.mean())}


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[predict, health])
