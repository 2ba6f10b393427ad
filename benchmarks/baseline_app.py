"""The baseline: how most public CIFAR-10 projects serve a model. PyTorch eager inside a small
Flask app (Werkzeug's threaded server), one request at a time through the network.

Same model (rebuilt from the same checkpoints, same test-time augmentation; where they are not
on the machine, the same architecture untrained), same decoding (`decode_image`), so the
comparison isolates the runtime and the server. Not shipped.
    BASELINE_MODEL=model/cifar10.json PORT=8001 python benchmarks/baseline_app.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from flask import Flask, jsonify, request

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "src")]
from benchmarks.model_bench import torch_predictor  # noqa: E402
from cifar_onnx.preprocess import ImageError, decode_image  # noqa: E402

torch.set_num_threads(int(os.environ.get("BASELINE_THREADS", "2")))
predict = torch_predictor(Path(os.environ["BASELINE_MODEL"]), int(os.environ.get("BASELINE_THREADS", "2")))
classes = __import__("json").loads(Path(os.environ["BASELINE_MODEL"]).read_text())["classes"]
app = Flask(__name__)


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/predict")
def classify():
    upload = request.files.get("file")
    if upload is None:
        return jsonify(error="no file"), 400
    try:
        image = decode_image(upload.read())
    except ImageError as exc:
        return jsonify(error=str(exc)), exc.status_code
    probs = predict(image[None])[0]
    best = int(np.argmax(probs))
    return jsonify(label=classes[best], index=best, confidence=float(probs[best]))


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True)
