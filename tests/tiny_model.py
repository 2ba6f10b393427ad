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
    return _save(graph, folder, name, default, size)


def write_qdq_conv_model(folder: Path, name: str, weight_max: int) -> Path:
    """A quantised (QDQ) 3x3 convolution that ONNX Runtime fuses into one integer kernel, with
    int8 weights up to `weight_max`: 127 (8 bits) or 63 (7 bits, as training.export writes them).
    Channel c's weights are all (c + 1) / 10 of weight_max, so on bright images the higher
    channels' u8 x s8 pair sums pass 32,767 with 8-bit weights: AVX2's vpmaddubsw saturates there
    (CPUs without VNNI) and the answer changes; 7-bit pairs stay below (255 x 63 x 2 = 32,130)."""
    channels = len(CLASSES)
    weights = np.stack([np.full((3, 3, 3), round(weight_max * (c + 1) / channels)) for c in range(channels)])
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["pixels"], ["x"], perm=[0, 3, 1, 2]),
            helper.make_node("QuantizeLinear", ["x", "one", "zero_u8"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "one", "zero_u8"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"], axis=0),
            helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
            helper.make_node("QuantizeLinear", ["y", "y_scale", "zero_u8"], ["yq"]),
            helper.make_node("DequantizeLinear", ["yq", "y_scale", "zero_u8"], ["yd"]),
            helper.make_node("GlobalAveragePool", ["yd"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Mul", ["flat", "k"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        name,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", channels])],
        initializer=[
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
            numpy_helper.from_array(np.array(0, dtype=np.uint8), "zero_u8"),
            numpy_helper.from_array(weights.astype(np.int8), "wq"),
            numpy_helper.from_array(np.full(channels, 1 / weight_max, dtype=np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(channels, dtype=np.int8), "w_zero"),
            numpy_helper.from_array(np.array(27.0, dtype=np.float32), "y_scale"),  # 27 taps x 255 / 255 levels
            numpy_helper.from_array(np.array(1e-3, dtype=np.float32), "k"),
        ],
    )
    return _save(graph, folder, name, False, 32)


def _save(graph: onnx.GraphProto, folder: Path, name: str, default: bool, size: int) -> Path:
    """The graph as `name`.onnx with the service's metadata file beside it."""
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
