"""Add the shifted test-time views to a served file that mirrors, without its training checkpoint.

    python -m training.views --model model/vgg16_bn --out /tmp/views

`training.export` chooses a file's test-time augmentation from its checkpoint; where the
checkpoint is gone, this wraps the served int8 graph instead. The file must serve level 1 (the
image and its mirror); the result is level 2 (`training.export.tta_logits`): the graph runs on
the image and on two copies shifted one pixel diagonally (reflect-padded), all three as one
batch, and their log-probabilities are averaged half and half. Softmax of that average equals
level 2's softmax of averaged logits, because each view's log-softmax differs from its logits by
one constant per image. The wrapped graph is copied unchanged, so its quantisation stays as it
was measured; the result is measured and described as an export would be.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from training.data import add_source_arguments, cache_dir, load_cifar10
from training.export import LEVEL_2_WEIGHTS, Served, measure, ort_probs, rebuilt, served_size, session, write_served
from training.holdout import clean_positions, measure_lossless


def with_shifts(inner: onnx.ModelProto) -> onnx.ModelProto:
    """`image` -> [image, shifted up-left, shifted down-right] as one batch -> `inner` ->
    weighted mean of log-probabilities -> softmax -> `probabilities`."""
    inner = compose.add_prefix(inner, "v_")
    size = 32  # the served contract: (N, 32, 32, 3) uint8
    consts = [
        numpy_helper.from_array(np.array([0, 1, 1, 0, 0, 1, 1, 0], dtype=np.int64), "pads"),
        numpy_helper.from_array(np.array([0, 0], dtype=np.int64), "start_a"),
        numpy_helper.from_array(np.array([size, size], dtype=np.int64), "end_a"),
        numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "start_b"),
        numpy_helper.from_array(np.array([size + 2, size + 2], dtype=np.int64), "end_b"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "spatial"),
        numpy_helper.from_array(np.array([len(LEVEL_2_WEIGHTS), -1, 10], dtype=np.int64), "by_view"),
        numpy_helper.from_array(np.array(LEVEL_2_WEIGHTS, dtype=np.float32).reshape(-1, 1, 1), "weights"),
        numpy_helper.from_array(np.array(1e-30, dtype=np.float32), "floor"),  # log(0) would be -inf
        numpy_helper.from_array(np.array([0], dtype=np.int64), "view_axis"),
    ]
    nodes = [
        helper.make_node("Pad", ["image", "pads"], ["padded"], mode="reflect", name="reflect_pad"),
        helper.make_node("Slice", ["padded", "start_a", "end_a", "spatial"], ["shift_a"], name="shift_up_left"),
        helper.make_node("Slice", ["padded", "start_b", "end_b", "spatial"], ["shift_b"], name="shift_down_right"),
        helper.make_node("Concat", ["image", "shift_a", "shift_b"], [inner.graph.input[0].name], axis=0, name="views"),
        *inner.graph.node,
        helper.make_node("Max", [inner.graph.output[0].name, "floor"], ["view_probs"], name="floor_probs"),
        helper.make_node("Log", ["view_probs"], ["view_logp"], name="log"),
        helper.make_node("Reshape", ["view_logp", "by_view"], ["logp_by_view"], name="by_view"),
        helper.make_node("Mul", ["logp_by_view", "weights"], ["weighted"], name="weigh"),
        helper.make_node("ReduceSum", ["weighted", "view_axis"], ["mean_logp"], keepdims=0, name="average"),
        helper.make_node("Softmax", ["mean_logp"], ["probabilities"], axis=-1, name="softmax"),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])
    output = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(nodes, "shifted_views", [image], [output], [*consts, *inner.graph.initializer],
                              value_info=inner.graph.value_info)  # fmt: skip
    model = helper.make_model(graph, opset_imports=inner.opset_import, ir_version=inner.ir_version,
                              producer_name="cifar-onnx views")  # fmt: skip
    onnx.checker.check_model(model)
    return model


def described(meta: dict[str, Any], level_2: float, argv: list[str]) -> dict[str, Any]:
    """The source's description with level 2 for its one member, sized as training.export counts it.
    `level_2`: the new file's accuracy on the set the export chose the level on, recorded in int8
    beside level 1's (the export's fp32 scores per level need the checkpoint). Its calibration and
    unsure fields are left out: training.trust fits them to the new file."""
    [member] = meta["members"]
    parameters, flops = served_size(Served([rebuilt(member["name"], member.get("recipe", {}).get("model", {}))], [2]))
    kept = ("title", "default", "architecture", "quantization", "training", "machine")
    scores = {"1": meta["accuracy"][chosen_on_key(member)], "2": level_2}
    return {
        **{k: meta[k] for k in kept if k in meta},
        "members": [{**member, "tta": 2, "tta_val_accuracy_int8": scores}],
        "test_time_augmentation": {member["name"]: 2},
        "parameters": parameters,
        "flops_per_image": flops,
        "export_command": " ".join(["python", "-m", "training.views", *argv]),
    }


def chosen_on_key(member: dict[str, Any]) -> str:
    """The metadata's accuracy field for the set the member's test-time level was chosen on."""
    return "lossless_val_int8" if member.get("tta_chosen_on") == "clean hold-out" else "val_int8"


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="served model path without suffix, serving level 1")
    p.add_argument("--name", help="writes <out>/<name>.onnx and .json (default: the source's name)")
    p.add_argument("--out", type=Path, required=True)
    add_source_arguments(p)
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    meta = json.loads(args.model.with_suffix(".json").read_text())
    levels = list(meta["test_time_augmentation"].values())
    if levels != [1]:
        p.error(f"{args.model} serves test-time levels {levels}; only a single network at level 1 can be wrapped")
    name = args.name or meta["name"]
    work = cache_dir() / "export" / name
    work.mkdir(parents=True, exist_ok=True)
    int8 = work / f"{name}.views.int8.onnx"
    onnx.save(with_shifts(onnx.load(str(args.model.with_suffix(".onnx")))), str(int8))

    [member] = meta["members"]
    data = load_cifar10(args.data_dir, args.download, layout=member.get("layout", "split"))
    results = measure({"int8": int8}, data.val.images, data.val.labels, data.test.images, data.test.labels,
                      args.threads)  # fmt: skip
    print(f"validation int8: {results['int8']['val']:.2f}% against {meta['accuracy']['val_int8']:.2f}% at level 1")
    positions = clean_positions(meta, data) if data.lossless else np.array([], dtype=np.int64)
    lossless = (
        measure_lossless(partial(ort_probs, session(int8, args.threads)), data, positions) if len(positions) else {}
    )
    level_2 = {"val_int8": results["int8"]["val"], **lossless}[chosen_on_key(member)]
    description = described(meta, level_2, sys.argv[1:] if argv is None else argv)
    write_served(args.out, name, int8, results, data.test.labels, description, lossless=lossless, layout=data.layout)


if __name__ == "__main__":
    main()
