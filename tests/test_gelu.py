"""training.gelu: PyTorch's five-operator GELU becomes one Gelu, with the same answers; a chain
whose inner result something else reads is left alone; the shipped graphs carry the fused form."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import SHIPPED

pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")
from training.gelu import fuse_gelu  # after the skip: training's package needs torch


def gelu_graph(erf_also_read: bool = False) -> onnx.ModelProto:
    """y = GELU(x) as torch.onnx exports it at opset 17, then y * 2 (another reader of y);
    with `erf_also_read`, the Erf's result is a graph output as well."""
    consts = {"sqrt2": math.sqrt(2), "one": 1.0, "half": 0.5, "two": 2.0}
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["x", "a"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
        helper.make_node("Mul", ["y", "two"], ["out"]),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 64])]
    if erf_also_read:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 64]))
    graph = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])], outputs,
        [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["out"], {"x": x})[0]


def test_the_chain_becomes_one_gelu_with_the_same_answers() -> None:
    x = np.random.default_rng(0).normal(0, 3, (2, 64)).astype(np.float32)
    model = gelu_graph()
    before = run(model, x)
    assert fuse_gelu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Gelu", "Mul"]
    assert {t.name for t in model.graph.initializer} == {"two"}, "the chain's own constants go"
    onnx.checker.check_model(model)
    assert np.abs(run(model, x) - before).max() <= 1e-6


def test_a_chain_whose_inner_result_is_read_elsewhere_is_left_alone() -> None:
    model = gelu_graph(erf_also_read=True)
    assert fuse_gelu(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Div", "Erf", "Add", "Mul", "Mul", "Mul"]


@pytest.mark.parametrize("name", ["cifar10", "airbench"])
def test_the_shipped_graphs_with_gelu_carry_the_fused_form(name: str) -> None:
    ops = [n.op_type for n in onnx.load(str(SHIPPED / f"{name}.onnx")).graph.node]
    assert "Erf" not in ops and ops.count("Gelu") == 7
