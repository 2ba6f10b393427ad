"""A small real ONNX model with the service's input contract, built without torch.

Used where a test needs a second model or a broken one; the service tests otherwise serve the
shipped model. It averages each colour channel and maps the three means to ten classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_tiny_model(folder: Path, name: str = "tiny", default: bool = False, size: int = 32) -> Path:
    weights = np.random.default_rng(0).normal(size=(3, len(CLASSES))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["x", "axes"], ["means"], keepdims=0),
            helper.make_node("Div", ["means", "scale"], ["unit"]),
            helper.make_node("MatMul", ["unit", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        name,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(CLASSES)])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale"),
            numpy_helper.from_array(weights, "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    meta = {
        "name": name, "title": f"{name} (test model)", "default": default, "classes": CLASSES,
        "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "size": size, "color": "RGB"},
        "output": {"name": "probabilities"},
    }  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path
