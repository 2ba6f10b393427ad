"""The export's int8 quantisation on a small depthwise-separable graph built here (no training):
7-bit weights everywhere, and with float_depthwise the depthwise convolution and its ReLU6 left
in float while the other convolutions are quantised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")
from training.export import depthwise_nodes, quantise  # after the skip: it needs torch


def separable_graph(path: Path) -> None:
    """uint8 NHWC 32x32 image -> conv 3x3 -> ReLU -> depthwise 3x3 -> ReLU6 -> pointwise 1x1 ->
    global average -> softmax: the shape of an EfficientNet-Lite block, with random weights."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Cast", ["image"], ["u"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["u"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["nchw", "scale"], ["x"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="stem_relu"),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["cd", "lo", "hi"], ["rd"], name="depthwise_relu6"),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"], name="pointwise"),
        helper.make_node("GlobalAveragePool", ["cp"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("wd", 8, 1, 3, 3), weight("bd", 8),
        weight("wp", 10, 8, 1, 1), weight("bp", 10),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "separable",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def quantised_weights(path: Path) -> dict[str, np.ndarray]:
    """Conv name -> its int8 weight tensor, for the convs whose weight comes through a DequantizeLinear."""
    graph = onnx.load(str(path)).graph
    tensors = {t.name: t for t in graph.initializer}
    dequantised = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.name: numpy_helper.to_array(tensors[dequantised[n.input[1]]])
        for n in graph.node
        if n.op_type == "Conv" and n.input[1] in dequantised
    }


@pytest.mark.parametrize("float_depthwise", [False, True])
def test_quantise_keeps_depthwise_float_only_when_asked(tmp_path: Path, float_depthwise: bool) -> None:
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    separable_graph(fp32)
    assert depthwise_nodes(fp32) == ["depthwise", "depthwise_relu6"]
    images = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    quantise(fp32, int8, images, "minmax", float_depthwise)

    weights = quantised_weights(int8)
    expected = {"stem", "pointwise"} | (set() if float_depthwise else {"depthwise"})
    assert set(weights) == expected
    for name, w in weights.items():
        assert w.dtype == np.int8 and w.min() >= -64 and w.max() <= 64, f"{name}: not 7-bit"
    if float_depthwise:  # the float conv reads the fp32 weight itself
        depthwise = next(n for n in onnx.load(str(int8)).graph.node if n.name == "depthwise")
        assert depthwise.input[1] == "wd"

    reference = ort.InferenceSession(str(fp32)).run(None, {"image": images})[0]
    served = ort.InferenceSession(str(int8)).run(None, {"image": images})[0]
    assert np.abs(served - reference).max() < 0.1  # still the same network, to int8 precision


def test_bias_correction_cancels_the_mean_shift_of_rounded_weights(tmp_path: Path) -> None:
    """Rounding weights to 7 bits moves each conv's mean output; the corrected graph's answers are
    closer to the float network's on average, on images the correction never saw."""
    fp32 = tmp_path / "fp32.onnx"
    separable_graph(fp32)
    images = np.random.default_rng(2).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    calibration, held_out = images[:128], images[128:]
    reference = ort.InferenceSession(str(fp32)).run(None, {"image": held_out})[0]
    shift = {}
    for corrected in (False, True):
        int8 = tmp_path / f"int8_{corrected}.onnx"
        quantise(fp32, int8, calibration, "minmax", bias_correction=corrected)
        served = ort.InferenceSession(str(int8)).run(None, {"image": held_out})[0]
        shift[corrected] = float(np.abs(served.mean(0) - reference.mean(0)).sum())
    assert shift[True] < 0.5 * shift[False], shift
