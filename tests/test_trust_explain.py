"""Calibrated probabilities, the `unsure` flag and /api/v1/explain, through the real app."""

from __future__ import annotations

import io

import numpy as np
import pytest
from litestar.testing import TestClient
from PIL import Image

from cifar_onnx.explain import occlusion_map
from cifar_onnx.preprocess import decode_image
from cifar_onnx.registry import load_model
from cifar_onnx.trust import apply_temperature, evidence, unsure_reason
from tests.conftest import HAS_SHIPPED, SHIPPED, dataset_dir
from tests.images import bad_uploads, encode, png_claiming_huge_size, sample, sample_image

SHIPPED_NAMES = sorted(p.stem for p in SHIPPED.glob("*.onnx"))
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def explain(client: TestClient, name: str, data: bytes, **params: object):
    return client.post("/api/v1/explain", files={"file": (name, data, "application/octet-stream")}, params=params)


def test_temperature_scaling_keeps_the_argmax_and_sums_to_one() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(10) * 0.3, size=500).astype(np.float32)
    for temperature in (0.5, 1.7, 3.0):
        scaled = apply_temperature(probs, temperature)
        assert (scaled.argmax(1) == probs.argmax(1)).all()
        assert np.allclose(scaled.sum(1), 1, atol=1e-5)
    # T > 1 softens: every top probability goes down (or stays at 1/10).
    assert (apply_temperature(probs, 2.0).max(1) <= probs.max(1) + 1e-6).all()


def test_unsure_reason_only_below_the_threshold() -> None:
    assert unsure_reason(5.0, 3.25) is None
    reason = unsure_reason(1.5, 3.25)
    assert reason and "1.50" in reason and "3.25" in reason


def test_evidence_is_the_logit_spread_of_one_network() -> None:
    """For softmax(z), top log-probability minus mean log-probability = max z - mean z."""
    logits = np.random.default_rng(1).normal(0, 3, (50, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(evidence(probs), logits.max(1) - logits.mean(1), atol=1e-6)
    flat = np.full((1, 10), 0.1)
    assert evidence(flat)[0] == pytest.approx(0.0)


@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained models")
@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_every_shipped_model_has_a_fitted_temperature_and_threshold(name: str) -> None:
    model = load_model(SHIPPED / f"{name}.onnx", threads=1)
    assert model.temperature != 1.0 and model.unsure_threshold > 0.0
    calibration = model.metadata["calibration"]["test"]
    assert (
        calibration["ece_after"] < calibration["ece_before"] and calibration["nll_after"] <= calibration["nll_before"]
    )
    if model.metadata.get("default"):  # the target; vgg16_bn misses it (2.77%, docs/MODEL.md)
        assert calibration["ece_after"] <= 2.0


def test_predictions_carry_unsure_in_single_and_batch(client: TestClient) -> None:
    one = client.post("/api/v1/predict", files={"file": ("ship.jpg", sample("ship"), "image/jpeg")}).json()
    assert one["unsure"] is False and one["unsure_reason"] is None
    flat = encode(Image.new("RGB", (64, 64), (128, 128, 128)), "PNG")
    files = [("files", ("ship.jpg", sample("ship"), "image/jpeg")), ("files", ("grey.png", flat, "image/png"))]
    results = client.post("/api/v1/predict/batch", files=files).json()["results"]
    assert results[0]["unsure"] is False
    if HAS_SHIPPED:  # a flat grey square is none of the ten classes
        assert results[1]["unsure"] is True and "threshold" in results[1]["unsure_reason"]


def test_unsure_and_explain_are_in_the_openapi_schema(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    prediction = schema["components"]["schemas"]["Prediction"]["properties"]
    assert prediction["unsure"]["type"] == "boolean" and "unsure_reason" in prediction
    operation = schema["paths"]["/api/v1/explain"]["post"]
    assert "image/png" in operation["responses"]["200"]["content"]
    assert {p["name"] for p in operation["parameters"]} >= {"model", "label"}


@pytest.mark.parametrize("name, data", [
    ("photo.jpg", sample("cat")),
    ("alpha.png", encode(sample_image("dog").resize((300, 200)).convert("RGBA"), "PNG")),
    ("grey.png", encode(sample_image("frog").convert("L").resize((500, 400)), "PNG")),
    ("tiny-1x1.png", encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")),
])  # fmt: skip
def test_explain_answers_a_png_of_the_display_size(client: TestClient, name: str, data: bytes) -> None:
    response = explain(client, name, data)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG" and picture.size == (256, 256) and picture.mode == "RGB"
    assert response.headers["x-explained-class"] in CLASSES
    assert 0.0 <= float(response.headers["x-class-probability"]) <= 1.0


@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained models")
@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_explain_works_for_every_model_and_defaults_to_the_prediction(client: TestClient, name: str) -> None:
    predicted = client.post("/api/v1/predict", files={"file": ("ship.jpg", sample("ship"), "image/jpeg")},
                            params={"model": name}).json()  # fmt: skip
    response = explain(client, "ship.jpg", sample("ship"), model=name)
    assert response.status_code == 200
    assert response.headers["x-explained-class"] == predicted["label"]
    other = explain(client, "ship.jpg", sample("ship"), model=name, label="cat")
    assert other.status_code == 200 and other.headers["x-explained-class"] == "cat"
    assert other.content != response.content


@pytest.mark.parametrize(
    "params, code", [({"model": "vgg19"}, "unknown_model"), ({"label": "giraffe"}, "unknown_label")]
)
def test_explain_bad_model_or_label_is_400(client: TestClient, params: dict, code: str) -> None:
    response = explain(client, "cat.jpg", sample("cat"), **params)
    assert response.status_code == 400 and response.json()["error"] == code
    assert ("vgg19" if code == "unknown_model" else "airplane") in response.json()["message"]


def test_explain_obeys_the_upload_limits(client: TestClient) -> None:
    too_big = explain(client, "big.jpg", sample("cat") + b"\x00" * (2 * 1024 * 1024))
    assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
    bomb = explain(client, "huge-claim.png", png_claiming_huge_size())
    assert bomb.status_code == 422 and bomb.json()["error"] == "too_many_pixels"
    text, status, code = bad_uploads()["text.txt"]
    refused = explain(client, "text.txt", text)
    assert refused.status_code == status and refused.json()["error"] == code
    assert explain(client, "cat.jpg", sample("cat")).status_code == 200  # still serving


def test_occlusion_map_marks_where_the_evidence_is(model_dir) -> None:
    """A real object on the left half, flat grey on the right: the evidence lies on the left."""
    model = load_model(model_dir / "cifar10.onnx", threads=1)
    canvas = np.full((32, 32, 3), 128, dtype=np.uint8)
    canvas[:, :16] = decode_image(sample("truck"))[:, 8:24]
    heat, index, probability = occlusion_map(model, canvas, None)
    assert index == int(model.predict(canvas[None])[0].argmax())  # None: the predicted class
    assert heat.shape == (32, 32) and 0 < probability <= 1
    assert heat[:, :16].sum() > heat[:, 16:].sum()


@pytest.mark.dataset
@pytest.mark.skipif(not HAS_SHIPPED, reason="needs the trained models")
def test_pasted_object_check_on_a_small_sample() -> None:
    """The docs' sanity check (training.explain_check) on 40 canvases: far above the 25% that a
    map ignoring the image would score."""
    from training.data import load_cifar10
    from training.explain_check import composites, hit_rate

    folder = dataset_dir()
    if folder is None:
        pytest.skip("the CIFAR-10 folder is not on this machine (set CIFAR10_DIR)")
    data = load_cifar10(folder)
    rates = hit_rate(
        load_model(SHIPPED / "cifar10.onnx", threads=2), composites(data.test.images, data.test.labels, 40)
    )
    assert rates["all"] >= 50.0, rates
