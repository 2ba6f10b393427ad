"""Dynamic batching (cifar_onnx.batching): requests waiting for the same model go through ONNX
Runtime together, and each answer is the one the image gets alone."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import numpy as np
import pytest

from cifar_onnx.preprocess import decode_image
from cifar_onnx.registry import load_model
from cifar_onnx.serving import InferenceQueue
from tests.conftest import SHIPPED, dataset_dir, make_client
from tests.images import sample

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def hundred_images() -> np.ndarray:
    """100 images: the CIFAR-10 test folder's when this machine has it, else the shipped samples
    shifted and mirrored."""
    root = dataset_dir()
    if root is not None:
        return np.stack(
            [decode_image((root / "test" / c / f"{i:04d}.jpg").read_bytes()) for c in LABELS for i in range(10)]
        )
    base = [decode_image(sample(label)) for label in LABELS]
    return np.stack([np.roll(b if i % 2 else b[:, ::-1], i // 2, axis=1) for i in range(10) for b in base])


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.onnx")), ids=lambda p: p.stem)
def test_batched_answers_are_the_single_image_answers(path: Path) -> None:
    images = hundred_images()
    model = load_model(path, threads=1)

    async def scenario() -> list:
        queue = InferenceQueue(workers=2, max_queue=200, max_batch=32)
        batcher = queue.batcher(model)
        results: list = [None] * len(images)

        async def one(i: int) -> None:
            results[i] = await batcher.infer(images[i : i + 1])

        async with anyio.create_task_group() as tasks:
            for i in range(len(images)):
                tasks.start_soon(one, i)
        return results

    results = anyio.run(scenario)
    assert max(r.batch_images for r in results) > 1, "100 requests at once: some must have been joined"
    assert max(r.batch_images for r in results) <= 32
    batched = np.concatenate([r.probabilities for r in results])
    alone = np.concatenate([model.predict(images[i : i + 1]) for i in range(len(images))])
    assert (batched.argmax(1) == alone.argmax(1)).all()
    assert np.abs(batched - alone).max() <= 1e-5


def test_concurrent_requests_with_different_models_and_top_k(model_dir: Path) -> None:
    """Real requests through the app, several models and top_k values at once, a batching wait so
    that they meet: every answer is what that request gets alone, and /metrics counts batches."""
    names = ["cifar10", "vgg16_bn", "airbench"]
    jobs = [(LABELS[i % 10], names[i % 3], 1 + i % 5) for i in range(24)]
    with make_client(model_dir, batch_wait_ms=30.0, inference_workers=1) as client:

        def post(job: tuple[str, str, int]) -> dict:
            label, model, k = job
            response = client.post("/api/v1/predict", params={"model": model, "top_k": k},
                                   files={"file": (f"{label}.jpg", sample(label), "image/jpeg")})  # fmt: skip
            assert response.status_code == 200, response.text
            return response.json()

        def counted() -> tuple[float, float]:
            """ONNX Runtime calls and the images they had, over all models so far."""
            text = client.get("/metrics").text
            return tuple(sum(float(v) for v in re.findall(rf'^cifar_onnx_batch_images_{kind}{{model="\w+"}} (\S+)$', text, re.M))
                         for kind in ("count", "sum"))  # fmt: skip

        before = counted()
        with ThreadPoolExecutor(12) as pool:
            together = list(pool.map(post, jobs))
        calls, images = (after - earlier for after, earlier in zip(counted(), before, strict=False))
        alone = [post(job) for job in jobs]
        # Every admitted request gave its place back (the queue bound counts these; the benchmarks
        # wait for 0 between levels).
        assert re.search(r"^cifar_onnx_requests_in_flight 0\.0$", client.get("/metrics").text, re.M)
    for job, a, b in zip(jobs, together, alone, strict=False):
        assert a["model"] == job[1] and len(a["top_k"]) == job[2]
        assert [s["label"] for s in a["top_k"]] == [s["label"] for s in b["top_k"]]
        assert all(
            abs(x["probability"] - y["probability"]) <= 1e-5 for x, y in zip(a["top_k"], b["top_k"], strict=False)
        )
    assert images > calls, f"no call joined two requests ({calls} calls, {images} images)"
