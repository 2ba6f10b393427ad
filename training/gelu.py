"""GELU as one operator in the exported graphs.

PyTorch exports nn.GELU at opset 17 as five operators, x * (erf(x / sqrt 2) + 1) * 0.5, and ONNX
Runtime's own GELU fusion does not match them in these quantised graphs, so each of the five makes
its own pass over the tensor. One com.microsoft Gelu (ONNX Runtime's contrib operator, the function
itself, not an approximation) computes it in one pass: docs/INT8.md has what that saves.
`training.export` applies it to every graph it quantises; `training.fuse_served` brings served
files along.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import helper, numpy_helper

CONTRIB = "com.microsoft"


def _constant(graph: onnx.GraphProto, name: str) -> float | None:
    """The value of a scalar initializer or Constant node's output, else None."""
    for tensor in graph.initializer:
        if tensor.name == name:
            value = numpy_helper.to_array(tensor)
            return float(value) if value.size == 1 else None
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            return float(value) if value.size == 1 else None
    return None


def fuse_gelu(model: onnx.ModelProto) -> int:
    """Replace each Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5 chain, whose inner results
    nothing else reads, by one Gelu(x); the number replaced."""
    graph = model.graph
    nodes = list(graph.node)  # one wrapper per node, so that identity names a node (names may be empty)
    producer = {out: node for node in nodes for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    outputs = {out.name for out in graph.output}

    def only_reader(node: onnx.NodeProto, op_type: str) -> onnx.NodeProto | None:
        """The one node that reads `node`'s result, if of `op_type` and nothing else reads it."""
        found = readers.get(node.output[0], [])
        alone = len(found) == 1 and node.output[0] not in outputs
        return found[0] if alone and found[0].op_type == op_type else None

    def other_input(node: onnx.NodeProto, known: str) -> str | None:
        rest = [name for name in node.input if name != known]
        return rest[0] if len(rest) == 1 else None

    def is_const(name: str | None, value: float) -> bool:
        found = None if name is None else _constant(graph, name)
        return found is not None and math.isclose(found, value, rel_tol=1e-6)

    def chain(erf: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]] | None:
        """x and the chain's five nodes, Div first, if `erf` is the middle of a GELU."""
        div = producer.get(erf.input[0])
        if (
            div is None
            or div.op_type != "Div"
            or not is_const(div.input[1], math.sqrt(2))
            or not only_reader(div, "Erf")
        ):
            return None
        x, add = div.input[0], only_reader(erf, "Add")
        if add is None or not is_const(other_input(add, erf.output[0]), 1.0):
            return None
        mul = only_reader(add, "Mul")
        if mul is None or other_input(mul, add.output[0]) != x:
            return None
        half = only_reader(mul, "Mul")
        if half is None or not is_const(other_input(half, mul.output[0]), 0.5):
            return None
        return x, [div, erf, add, mul, half]

    replaced: dict[int, onnx.NodeProto] = {}  # id of the chain's last node -> its Gelu
    dropped: set[int] = set()
    for erf in [node for node in nodes if node.op_type == "Erf"]:
        found = chain(erf)
        if found is None:
            continue
        x, links = found
        replaced[id(links[-1])] = helper.make_node("Gelu", [x], list(links[-1].output), name=f"{erf.name}/Gelu",
                                                   domain=CONTRIB)  # fmt: skip
        dropped |= {id(node) for node in links[:-1]}
    # The Gelu takes its chain's last place: x is computed before the chain began, so the order
    # stays topological.
    kept_nodes = [replaced.get(id(node), node) for node in nodes if id(node) not in dropped]
    # The chains' constants (sqrt 2, 1, 0.5), unless something else still reads them.
    used = {name for node in kept_nodes for name in node.input} | outputs
    kept_nodes = [node for node in kept_nodes if node.op_type != "Constant" or node.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if replaced and not any(opset.domain == CONTRIB for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return len(replaced)


def fuse_gelu_file(path: Path, out: Path | None = None) -> int:
    """`fuse_gelu` on an ONNX file, written to `out` (default: in place) when anything changed."""
    model = onnx.load(str(path))
    count = fuse_gelu(model)
    if count:
        onnx.save(model, str(out or path))
    return count
