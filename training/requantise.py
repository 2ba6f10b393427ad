"""Re-quantise a served int8 graph with 7-bit weights, from the fp32 network recovered from the
graph itself (for models whose training checkpoints are gone).

    python -m training.requantise --name airbench          # model/airbench.onnx, in place

Why: fused u8s8 kernels on x86 CPUs without VNNI add pairs of products in 16 bits and saturate
with 8-bit weights; with 7-bit weights they cannot (docs/MODEL.md, "int8"). `training.export`
now quantises that way; this brings the older files along.

Recovering the fp32 graph from a QDQ graph:
- every DequantizeLinear of an initializer (weights, biases) becomes the float initializer it
  computes, (q - zero) * scale: exactly the int8 network's weights;
- every activation QuantizeLinear -> DequantizeLinear pair becomes a Clip to the range that pair
  can represent, [(0 - zero) * scale, (255 - zero) * scale]. The quantiser dropped a ReLU (or
  Clip) wherever the pair's uint8 range already clamped at zero; without the Clip the recovered
  network would lose that non-linearity. Rounding to the 8-bit grid is all that is left out.
The recovered graph must agree with the int8 one on >= 99% of validation images, then it is
quantised as `training.export` quantises (calibrated on training images, `reduce_range=True`) and
measured on all validation and test images, fused and unfused; the metadata keeps everything it
had and records the step under `requantised`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cifar_onnx.registry import _session
from training.data import add_source_arguments, load_cifar10
from training.export import (
    BIAS_CORRECTION,
    FLOAT_DEPTHWISE,
    accuracy,
    confusion,
    ort_probs,
    per_class,
    quantise,
    sha256,
)

AGREEMENT = 0.99


def recover_fp32(int8: Path, fp32: Path) -> dict[str, int]:
    """Write the fp32 graph recovered from the QDQ graph `int8`; returns what was replaced."""
    model = onnx.load(str(int8))
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    weights, clips, kept = 0, 0, []
    new_initializers = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in tensors:
            q, scale, zero = (numpy_helper.to_array(tensors[n]).astype(np.float64) for n in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim:  # per-channel: scales along `axis`
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            value = ((q - zero) * scale).astype(np.float32)
            new_initializers.append(numpy_helper.from_array(value, node.output[0]))
            weights += 1
            continue
        if node.op_type == "DequantizeLinear" and producers.get(node.input[0]) is not None:
            quant = producers[node.input[0]]
            if quant.op_type == "QuantizeLinear":
                scale = float(numpy_helper.to_array(tensors[node.input[1]]))
                zero = float(numpy_helper.to_array(tensors[node.input[2]])) if len(node.input) > 2 else 0.0
                low, high = (0 - zero) * scale, (255 - zero) * scale
                names = [f"{node.output[0]}_lo", f"{node.output[0]}_hi"]
                new_initializers += [
                    numpy_helper.from_array(np.array(v, np.float32), n) for v, n in zip((low, high), names, strict=True)
                ]
                kept.append(
                    helper.make_node("Clip", [quant.input[0], *names], [node.output[0]], name=f"{node.name}_clip")
                )
                clips += 1
                continue
        if node.op_type == "QuantizeLinear":
            continue  # its DequantizeLinear became a Clip (or the pair feeds nothing)
        kept.append(node)
    graph.ClearField("node")
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    quant_tensors = {n for node in onnx.load(str(int8)).graph.node if node.op_type in ("DequantizeLinear", "QuantizeLinear")
                     for n in node.input[1:]}  # fmt: skip
    originals = [t for t in graph.initializer if t.name in used and t.name not in quant_tensors]
    graph.ClearField("initializer")
    graph.initializer.extend(originals + [t for t in new_initializers if t.name in used])
    onnx.checker.check_model(model)
    onnx.save(model, str(fp32))
    return {"weights_dequantised": weights, "activation_pairs_to_clip": clips}


def weight_range(path: Path) -> tuple[int, int]:
    """Smallest and largest int8 weight in the graph (reduced-range weights stay within -64..64)."""
    graph = onnx.load(str(path)).graph
    values = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return min(int(v.min()) for v in values), max(int(v.max()) for v in values)


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="a served model: model/<name>.onnx and .json")
    p.add_argument("--model-dir", type=Path, default=Path("model"))
    p.add_argument("--out", type=Path, help="where to write <name>.onnx and .json (default: in place)")
    p.add_argument("--calibration-images", type=int, default=512)
    add_source_arguments(p)
    p.add_argument("--limit", type=int, default=0, help="evaluate on N val/test images (tests)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--float-depthwise", action="store_true", help=f"keep in float: {FLOAT_DEPTHWISE}")
    p.add_argument(
        "--min-agreement",
        type=float,
        default=AGREEMENT,
        help="share of validation answers the recovered graph must share with the int8 one",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    source = args.model_dir / f"{args.name}.onnx"
    meta: dict[str, Any] = json.loads(source.with_suffix(".json").read_text())
    data = load_cifar10(args.data_dir, args.download)
    val_x, val_y, test_x, test_y = data.val.images, data.val.labels, data.test.images, data.test.labels
    if args.limit:  # a random subset (the splits are ordered by class)
        rng = np.random.default_rng(0)
        keep_val, keep_test = rng.permutation(len(val_y))[: args.limit], rng.permutation(len(test_y))[: args.limit]
        val_x, val_y, test_x, test_y = val_x[keep_val], val_y[keep_val], test_x[keep_test], test_y[keep_test]
    calibration = data.train.images[
        np.random.default_rng(0).permutation(len(data.train.images))[: args.calibration_images]
    ]

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "recovered.onnx", Path(tmp) / "int8.onnx"
        replaced = recover_fp32(source, fp32)
        served_val = ort_probs(_session(source, args.threads, False), val_x)
        recovered_val = ort_probs(_session(fp32, args.threads, True), val_x)
        agreement = float((served_val.argmax(1) == recovered_val.argmax(1)).mean())
        print(f"recovered fp32 graph ({replaced}): same answer as the int8 graph on {100 * agreement:.2f}% of "
              f"{len(val_y)} validation images", flush=True)  # fmt: skip
        if agreement < args.min_agreement:
            sys.exit(
                f"the recovered graph agrees on only {100 * agreement:.2f}% (< {100 * args.min_agreement:.0f}%): not re-quantised"
            )
        quantise(fp32, int8, calibration, "minmax", args.float_depthwise)
        low, high = weight_range(int8)
        # Before, unfused: the figures its export recorded (the reference kernels give the same
        # answers on every CPU). Fused before and after, and after unfused, are measured here.
        recorded = meta["accuracy"]
        measured: dict[str, dict[str, float]] = {
            "before_unfused": {"val": recorded["val_int8"], "test": recorded["test_int8"], "recorded": True}
        }
        for label, path, fused in (("before_fused", source, True), ("after_unfused", int8, False),
                                   ("after_fused", int8, True)):  # fmt: skip
            test_p = ort_probs(_session(path, args.threads, fused), test_x)
            measured[label] = {"test": accuracy(test_p, test_y),
                               "val": accuracy(ort_probs(_session(path, args.threads, fused), val_x), val_y)}  # fmt: skip
            if label == "after_unfused":
                after_test = test_p
        measured["recovered_fp32"] = {"val": accuracy(recovered_val, val_y)}
        for key, value in measured.items():
            print(f"{key}: val {value['val']:.2f}%  test {value.get('test', '-')}%", flush=True)
        out = args.out or args.model_dir
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{args.name}.onnx"
        target.write_bytes(int8.read_bytes())
    meta["quantization"] = {**meta["quantization"], "weights": "int8 per-channel symmetric, 7-bit range (reduce_range)",
                            "weight_bits": 7, "bias_correction": BIAS_CORRECTION}  # fmt: skip
    if args.float_depthwise:
        meta["quantization"]["float_ops"] = FLOAT_DEPTHWISE
    meta["accuracy"] = {
        **meta["accuracy"],
        "val_int8": measured["after_unfused"]["val"],
        "test_int8": measured["after_unfused"]["test"],
    }
    meta["per_class_test_int8"] = per_class(after_test, test_y)
    meta["confusion_test_int8"] = confusion(after_test, test_y)
    meta["size_bytes"] = {**meta.get("size_bytes", {}), "int8": target.stat().st_size}
    meta["requantised"] = {"from": f"{source.name} sha256 {meta['sha256']}", **replaced, "agreement_val": round(agreement, 4),
                           "weight_range": [low, high], "accuracy": measured,
                           "command": " ".join(["python", "-m", "training.requantise", *(argv if argv is not None else sys.argv[1:])])}  # fmt: skip
    meta["sha256"] = sha256(target)
    target.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {target}: int8 weights in [{low}, {high}]", flush=True)


if __name__ == "__main__":
    main()
