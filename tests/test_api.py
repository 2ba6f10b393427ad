"""The JSON API over real HTTP semantics (Litestar's TestClient), with the served model."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import TestClient

from cifar_onnx.preprocess import decode_image
from cifar_onnx.registry import load_model
from tests.conftest import HAS_SHIPPED, SHIPPED, make_client
from tests.images import SAMPLES, bad_uploads, odd_valid_images, sample
from tests.tiny_model import write_tiny_model

LABELS = sorted(p.stem for p in SAMPLES.glob("*.jpg"))
SHIPPED_NAMES = sorted(p.stem for p in SHIPPED.glob("*.onnx"))


def post_one(client: TestClient, name: str, data: bytes, **params: object):
    return client.post("/api/v1/predict", files={"file": (name, data, "application/octet-stream")}, params=params)


def assert_still_serving(client: TestClient) -> None:
    response = post_one(client, "cat.jpg", sample("cat"))
    assert response.status_code == 200, response.text


def test_predict_returns_the_documented_shape(client: TestClient) -> None:
    response = post_one(client, "cat.jpg", sample("cat"), top_k=5)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"label", "index", "confidence", "top_k", "model", "inference_ms", "unsure", "unsure_reason"}
    assert len(body["top_k"]) == 5
    assert body["top_k"][0] == {"label": body["label"], "index": body["index"], "probability": body["confidence"]}
    probabilities = [s["probability"] for s in body["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert body["model"] == "cifar10" and body["inference_ms"] > 0


def test_predictions_equal_the_model_run_directly(client: TestClient, model_dir: Path) -> None:
    """The route adds nothing and loses nothing: same probabilities as ORT on decode_image."""
    model = load_model(model_dir / "cifar10.onnx", threads=1)
    for label in LABELS:
        expected = model.predict(decode_image(sample(label))[None])[0]
        body = post_one(client, f"{label}.jpg", sample(label), top_k=10).json()
        got = np.zeros(10)
        for score in body["top_k"]:
            got[score["index"]] = score["probability"]
        assert np.allclose(got, expected, atol=1e-5)


@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained model in model/")
@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_each_shipped_model_is_selectable_and_recognises_real_photos(client: TestClient, name: str) -> None:
    bodies = [post_one(client, f"{label}.jpg", sample(label), model=name).json() for label in LABELS]
    assert {b["model"] for b in bodies} == {name}
    correct = sum(b["label"] == label for b, label in zip(bodies, LABELS, strict=False))
    assert correct >= 8, f"{name}: only {correct}/10 sample images classified correctly"


@pytest.mark.parametrize("name", sorted(odd_valid_images()))
def test_odd_but_valid_images_are_classified(client: TestClient, name: str) -> None:
    response = post_one(client, name, odd_valid_images()[name])
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["confidence"] <= 1.0


@pytest.mark.parametrize("name", sorted(bad_uploads()))
def test_bad_uploads_get_status_and_message(client: TestClient, name: str) -> None:
    data, status, code = bad_uploads()[name]
    response = post_one(client, name, data)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["status"] == status
    assert len(body["message"]) > 20 and "Traceback" not in response.text
    assert_still_serving(client)


def test_over_the_per_file_limit_is_413(client: TestClient) -> None:
    too_big = sample("cat") + b"\x00" * (2 * 1024 * 1024)
    response = post_one(client, "big.jpg", too_big)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large" and "2,097,152" in response.json()["message"]
    assert_still_serving(client)


def test_over_the_request_limit_is_413(model_dir: Path) -> None:
    with make_client(model_dir, max_request_bytes=100_000, max_upload_bytes=50_000) as small:
        response = post_one(small, "big.jpg", b"\xff\xd8\xff" + b"\x00" * 200_000)
        assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
        assert_still_serving(small)


@pytest.mark.parametrize(
    "send",
    [
        {"files": {"image": ("cat.jpg", sample("cat"), "image/jpeg")}},  # wrong field name
        {"data": {"file": "not a file"}},  # a text field, not a file
        {"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}},  # no parts
        {"json": {"file": "cat.jpg"}},  # not multipart at all
    ],
)
def test_no_file_or_wrong_field_is_400(client: TestClient, send: dict) -> None:
    response = client.post("/api/v1/predict", **send)
    assert response.status_code == 400, response.text
    assert "'file'" in response.json()["message"]
    assert_still_serving(client)


@pytest.mark.parametrize("top_k", [0, 11, "three"])
def test_top_k_out_of_range_is_400(client: TestClient, top_k: object) -> None:
    response = post_one(client, "cat.jpg", sample("cat"), top_k=top_k)
    assert response.status_code == 400 and "top_k" in response.text


def test_batch_is_one_model_call_with_filenames(client: TestClient) -> None:
    files = [("files", (f"{label}.jpg", sample(label), "image/jpeg")) for label in LABELS[:4]]
    response = client.post("/api/v1/predict/batch", files=files, params={"top_k": 2})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [f"{label}.jpg" for label in LABELS[:4]]
    assert all(len(r["top_k"]) == 2 for r in results)
    assert len({r["inference_ms"] for r in results}) == 1, "one ORT call for the whole batch"
    single = post_one(client, "x.jpg", sample(LABELS[0]), top_k=2).json()
    assert results[0]["top_k"] == single["top_k"]


def test_batch_of_one_file(client: TestClient) -> None:
    response = client.post("/api/v1/predict/batch", files=[("files", ("cat.jpg", sample("cat"), "image/jpeg"))])
    assert response.status_code == 200 and len(response.json()["results"]) == 1


def test_batch_with_too_many_files_is_400(client: TestClient) -> None:
    files = [("files", (f"{i}.jpg", sample("cat"), "image/jpeg")) for i in range(9)]
    response = client.post("/api/v1/predict/batch", files=files)
    assert response.status_code == 400
    assert response.json()["error"] == "too_many_files" and "limit is 8" in response.json()["message"]


def test_batch_answers_each_file_and_names_the_bad_one(client: TestClient) -> None:
    """A bad file gets its own error entry; the others are still classified, in one model call."""
    files = [("files", ("good.jpg", sample("cat"), "image/jpeg")), ("files", ("notes.txt", b"hello", "text/plain")),
             ("files", ("ship.jpg", sample("ship"), "image/jpeg"))]  # fmt: skip
    response = client.post("/api/v1/predict/batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    good, bad, ship = body["results"]
    assert good["label"] == "cat" and ship["label"] == "ship" and body["failed"] == 1
    assert bad == {"filename": "notes.txt", "status": 415, "error": "unsupported_media_type",
                   "message": bad["message"]} and bad["message"].startswith("notes.txt:")  # fmt: skip
    assert body["inference_ms"] == good["inference_ms"] == ship["inference_ms"]
    only_bad = client.post("/api/v1/predict/batch", files=[("files", ("notes.txt", b"hello", "text/plain"))]).json()
    assert only_bad["failed"] == 1 and only_bad["inference_ms"] is None


def test_batch_wrong_field_is_400(client: TestClient) -> None:
    response = client.post("/api/v1/predict/batch", files={"file": ("cat.jpg", sample("cat"), "image/jpeg")})
    assert response.status_code == 400 and "'files'" in response.json()["message"]


def test_models_lists_metadata_and_default(client: TestClient) -> None:
    body = client.get("/api/v1/models").json()
    assert body["default"] == "cifar10"
    (model,) = [m for m in body["models"] if m["name"] == "cifar10"]
    assert model["default"] is True
    assert model["metadata"]["classes"][3] == "cat" and model["metadata"]["input"]["size"] == 32


@pytest.mark.skipif(not HAS_SHIPPED, reason="no shipped model in model/")
def test_models_show_clean_and_jpeg_validation_accuracy(client: TestClient) -> None:
    """Users send clean photos: every served model's accuracy on the clean hold-out is shown
    beside its JPEG validation accuracy, with how many held-out images it was measured on."""
    for model in client.get("/api/v1/models").json()["models"]:
        accuracy = model["metadata"]["accuracy"]
        assert 50 < accuracy["lossless_val_int8"] <= 100 and 50 < accuracy["val_int8"] <= 100, model["name"]
        assert 100 <= accuracy["images"]["lossless_val"] <= 2000, model["name"]


def test_several_models_are_served_and_selectable(two_models: Path, model_dir: Path) -> None:
    with make_client(two_models) as c:
        names = {m["name"] for m in c.get("/api/v1/models").json()["models"]}
        assert names == {p.stem for p in model_dir.glob("*.onnx")} | {"extra"}
        assert post_one(c, "cat.jpg", sample("cat"), model="extra").json()["model"] == "extra"
        assert post_one(c, "cat.jpg", sample("cat")).json()["model"] == "cifar10"
        unknown = post_one(c, "cat.jpg", sample("cat"), model="nope")
        assert unknown.status_code == 400 and "extra" in unknown.json()["message"]


def test_health_metrics_and_schema(client: TestClient) -> None:
    assert client.get("/health/live").json()["status"] == "live"
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["models"]
    metrics = client.get("/metrics").text
    assert "cifar_onnx_inference_seconds_bucket" in metrics
    assert 'path="/api/v1/predict"' in metrics and 'status_code="200"' in metrics
    schema = client.get("/schema/openapi.json").json()
    predict = schema["paths"]["/api/v1/predict"]["post"]
    assert {"400", "413", "415", "422", "503"} <= set(predict["responses"])
    assert {p["name"] for p in predict["parameters"]} == {"top_k", "model"}
    assert client.get("/schema").status_code == 200


def test_an_empty_model_folder_stops_the_start(tmp_path: Path) -> None:
    """A configuration error no retry mends: the process ends with one line, not a 503 forever."""
    from cifar_onnx.app import create_app
    from cifar_onnx.settings import Settings

    with pytest.raises(SystemExit, match=r"no \*\.onnx model in the model folder") as stopped:
        create_app(Settings.from_env(environ={}, model_dir=tmp_path))
    assert str(tmp_path) not in str(stopped.value)


def test_an_unknown_default_model_stops_the_start(model_dir: Path) -> None:
    from cifar_onnx.app import create_app
    from cifar_onnx.settings import Settings

    with pytest.raises(SystemExit, match="CIFAR_ONNX_DEFAULT_MODEL='nope' is not a served model"):
        create_app(Settings.from_env(environ={"CIFAR_ONNX_DEFAULT_MODEL": "nope"}, model_dir=model_dir))


def test_a_model_that_fails_to_load_fails_readiness_and_liveness(tmp_path: Path) -> None:
    """A file that is not a graph (its metadata fine): found only when loading, in the background.
    Readiness says failed, liveness fails too (an orchestrator restarts or alerts), the routes
    answer 500 rather than "try again shortly", and no path is shown."""
    from cifar_onnx.app import create_app
    from cifar_onnx.settings import Settings

    write_tiny_model(tmp_path, "broken")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    app = create_app(Settings.from_env(environ={}, model_dir=tmp_path))
    with TestClient(app) as c:
        app.state.store.load_thread.join(30)
        ready, live = c.get("/health/ready"), c.get("/health/live")
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert live.status_code == 503 and live.json()["status"] == "failed"
        assert "'broken' could not be loaded" in ready.json()["error"] and str(tmp_path) not in ready.text
        response = post_one(c, "cat.jpg", sample("cat"))
        assert response.status_code == 500 and response.json()["error"] == "models_failed"
        assert "retry-after" not in response.headers


def test_not_ready_answers_503_while_loading_then_serves(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cifar_onnx import registry
    from cifar_onnx.app import create_app
    from cifar_onnx.settings import Settings

    write_tiny_model(tmp_path, "cifar10", default=True)
    loading, real = threading.Event(), registry.load_named
    monkeypatch.setattr(registry, "load_named", lambda *args: (loading.wait(30), real(*args))[1])
    app = create_app(Settings.from_env(environ={}, model_dir=tmp_path))
    with TestClient(app) as c:
        response = post_one(c, "cat.jpg", sample("cat"))
        assert response.status_code == 503 and response.json()["error"] == "not_ready"
        assert response.headers["retry-after"] == "1" and c.get("/health/ready").json()["status"] == "loading"
        assert c.get("/health/live").status_code == 200
        loading.set()
        assert app.state.store.wait(30)
        assert post_one(c, "cat.jpg", sample("cat")).status_code == 200
        assert c.get("/health/ready").status_code == 200


def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = client.get("/api/v1/predict")
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    assert response.json()["error"] == "method_not_allowed"


def test_unknown_route_and_a_failure_nobody_expected_answer_in_the_same_shape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"

    def broken(metadata: dict) -> dict:
        raise RuntimeError("/secret/path must not leak")

    with monkeypatch.context() as patch:
        patch.setattr("cifar_onnx.api.public_metadata", broken)
        answer = client.get("/api/v1/models")
    assert answer.status_code == 500 and answer.json()["error"] == "internal_error"
    assert "secret" not in answer.text
    assert client.get("/api/v1/models").status_code == 200, "the service keeps serving"


def test_the_most_specific_translation_answers_each_error_type() -> None:
    from litestar.exceptions import NotFoundException

    from cifar_onnx.errors import ServiceError, to_error
    from cifar_onnx.preprocess import CorruptImageError
    from cifar_onnx.registry import UnknownModelError

    request = type("Request", (), {"method": "GET", "url": type("URL", (), {"path": "/x"})(), "scope": {}})()
    assert to_error(ServiceError(408, "request_timeout", "slow"), request).error == "request_timeout"
    assert to_error(CorruptImageError("truncated"), request).status == 422
    assert to_error(UnknownModelError("no model 'x'"), request).error == "unknown_model"
    assert to_error(NotFoundException(), request).error == "not_found"
