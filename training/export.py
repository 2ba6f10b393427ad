"""Export trained runs to the served ONNX contract, quantise to int8, evaluate, write metadata.

    python -m training.export --run ~/.cache/cifar-onnx/runs/airbench --name cifar10 --default

Several --run values make one ensemble graph that averages the members' probabilities.
Steps, in order: choose test-time augmentation on the validation set; export fp32 ONNX that
takes uint8 RGB (N, 32, 32, 3) and returns probabilities; check ONNX Runtime against torch;
static int8 QDQ quantisation (per-channel weights) calibrated on training images; evaluate
fp32 and int8 on all validation and test images; write `<name>.onnx` and `<name>.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cifar_onnx.registry import make_session
from training.data import CLASSES, add_source_arguments, cache_dir, load_cifar10
from training.gelu import fuse_gelu_file
from training.holdout import clean_positions, measure_lossless
from training.models import REGISTRY, AirbenchNet, create_model

OPSET = 17
QUANTISED_OPS = ["Conv", "Gemm", "MatMul", "Clip", "Relu"]
BIAS_CORRECTION = "empirical, per output channel, on the calibration images"
FLOAT_DEPTHWISE = "depthwise Conv (group > 1) and the ReLU/Clip after each"  # --float-depthwise keeps these float
DATASET_NOTE = ("CIFAR-10, official split, read from a JPEG quality-75 re-encoding of the official images "
                "(mean PSNR 30.5 dB against the originals); ")  # fmt: skip
LAYOUT_NOTES = {
    "split": "45,000 train (less the clean hold-out's copies, for runs since it existed) / 5,000 validation "
             "(stratified, fixed seed) / 10,000 test",
    "full": "trained on the 48,000 training images outside the clean hold-out (2,000 lossless training "
            "images), validated on the hold-out's JPEG copies / 10,000 test",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The graph we serve: uint8 NHWC in, probabilities out, test-time augmentation inside.
# ---------------------------------------------------------------------------------------------


# Level 2's weights: the image's pair (itself and its mirror) half, each shifted pair a quarter.
LEVEL_2_WEIGHTS = (0.5, 0.25, 0.25)


def tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """0: the image; 1: mean of it and its mirror; 2: level 1 on the image, averaged (half and
    half) with level 1 on two copies shifted one pixel diagonally (reflect-padded), as airbench.
    All views go through the network as one batch."""
    n = x.shape[0]
    views = [x]
    if level >= 2:
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views += [padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]]
    if level >= 1:
        views += [v.flip(-1) for v in views]
    logits = model(torch.cat(views)).view(len(views), n, -1)
    if level == 0:
        return logits[0]
    if level == 1:
        return logits.mean(0)
    mirrored_pairs = (logits[:3] + logits[3:]) / 2  # per view: mean of it and its mirror
    return sum(w * pair for w, pair in zip(LEVEL_2_WEIGHTS, mirrored_pairs, strict=True))


class Served(nn.Module):
    """uint8 (N, 32, 32, 3) RGB -> probabilities (N, 10); an ensemble averages probabilities."""

    def __init__(self, members: list[nn.Module], levels: list[int]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.levels = levels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255.0
        probs = [tta_logits(m, x, lvl).softmax(-1) for m, lvl in zip(self.members, self.levels, strict=False)]
        return torch.stack(probs).mean(0)


# ---------------------------------------------------------------------------------------------
# Loading runs, and measuring in torch.
# ---------------------------------------------------------------------------------------------


def rebuilt(name: str, model_options: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A registered network as it is exported, in eval mode: with a checkpoint's `state`, the
    trained network; without, the same architecture untrained (same computation, so the same
    speed: what the benchmarks time where the checkpoints are not on the machine)."""
    # Pretrained weights are not needed: the checkpoint replaces every tensor.
    options = {**model_options, **({"pretrained": False} if name != "airbench" else {})}
    model = create_model(name, **options).model
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    if isinstance(model, AirbenchNet):
        model.fold_for_export()
    return model


def served_size(served: Served) -> tuple[int, int]:
    """(parameters, FLOPs per image) of the network as served: test-time views included."""
    with FlopCounterMode(display=False) as counter:
        served(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    return sum(p.numel() for p in served.parameters()), counter.get_total_flops()


def load_run(run: Path) -> tuple[nn.Module, dict[str, Any]]:
    ckpt_path = run / "final.pt" if (run / "final.pt").exists() else run / "last.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = rebuilt(ckpt["name"], ckpt["recipe"]["model"], ckpt["model"])
    info = {"name": ckpt["name"], "checkpoint": str(ckpt_path), "recipe": ckpt["recipe"], "init": ckpt["init"],
            "pretrained": ckpt["pretrained"], "epochs": ckpt["state"]["epoch"],
            "wall_minutes": round(ckpt["state"]["wall"] / 60, 1), "cpu_minutes": round(ckpt["state"]["cpu"] / 60, 1),
            "history": ckpt["state"]["history"]}  # fmt: skip
    if "finetune" in ckpt:  # training.finetune: a later step on top of the original run
        info["finetune"] = ckpt["finetune"]
    run_json = run / "run.json"
    if run_json.exists():
        record = json.loads(run_json.read_text())
        info.update(
            command=record["command"],
            environment=record["environment"],
            data=record["data"],
            precision=record.get("precision"),
        )
        if "layout" in record:  # runs since the clean hold-out: which images it never trained on
            info.update(layout=record["layout"], lossless_images=record.get("lossless_images", 0))
    return model, info


@torch.no_grad()
def torch_probs(served: nn.Module, images: np.ndarray, batch: int = 250) -> np.ndarray:
    return np.concatenate(
        [served(torch.from_numpy(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    )


def choose_tta(
    model: nn.Module, name: str, val_images: np.ndarray, val_labels: np.ndarray, forced: int | None
) -> tuple[int, dict[int, float]]:
    """Validation accuracy at each TTA level; the level kept is the cheapest within 0.05 point
    of the best (an extra view costs a whole forward pass at serving time)."""
    levels = [0, 1, 2] if name == "airbench" else [0, 1]
    scores = {}
    for level in levels:
        probs = torch_probs(Served([model], [level]), val_images)
        scores[level] = round(100.0 * float((probs.argmax(1) == val_labels).mean()), 2)
        print(f"  {name}: TTA level {level}: validation {scores[level]:.2f}%", flush=True)
    if forced is not None:
        return forced, scores
    best = max(scores.values())
    return min(level for level, acc in scores.items() if acc >= best - 0.05), scores


# ---------------------------------------------------------------------------------------------
# ONNX: export, check, quantise, evaluate.
# ---------------------------------------------------------------------------------------------


def export_onnx(served: nn.Module, path: Path) -> None:
    example = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    torch.onnx.export(served, (example,), str(path), input_names=["image"], output_names=["probabilities"],
                      dynamic_axes={"image": {0: "N"}, "probabilities": {0: "N"}}, opset_version=OPSET,
                      do_constant_folding=True, dynamo=False)  # fmt: skip
    onnx.checker.check_model(onnx.load(str(path)))


def session(path: Path, threads: int = 2) -> ort.InferenceSession:
    """Made as the service makes its sessions, so what we measure is what it serves."""
    return make_session(path, threads)[0]


def ort_probs(sess: ort.InferenceSession, images: np.ndarray, batch: int = 250) -> np.ndarray:
    return np.concatenate(
        [sess.run(["probabilities"], {"image": images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    )


class Calibration(CalibrationDataReader):
    """Batches of real training images, as the service's preprocessing produced them."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"image": batch}


def depthwise_nodes(path: Path) -> list[str]:
    """Names of the depthwise convolutions (Conv with group > 1) and of the ReLU/Clip each feeds.
    They have nine weights a channel, where a 7-bit grid costs most (EfficientNet-Lite0 lost 0.2
    point with them in 7 bits, docs/MODEL.md "int8"), and little time to win: they stay float."""
    graph = onnx.load(str(path)).graph
    convs = {n.name: n.output[0] for n in graph.node if n.op_type == "Conv"
             and any(a.name == "group" and a.i > 1 for a in n.attribute)}  # fmt: skip
    outputs = set(convs.values())
    acts = [n.name for n in graph.node if n.op_type in ("Relu", "Clip") and n.input[0] in outputs]
    return [*convs, *acts]


def conv_input_means(fp32: Path, calibration: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Each Conv's mean input per channel (NCHW) over the calibration images, through the float graph."""
    model = onnx.load(str(fp32))
    wanted = sorted({n.input[0] for n in model.graph.node if n.op_type == "Conv"})
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in wanted if n not in known)  # fmt: skip
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}  # several images per input image where TTA stacks views: all count
    for i in range(0, len(calibration), batch):
        for name, value in zip(names, sess.run(None, {"image": calibration[i : i + batch]}), strict=True):
            if name in wanted:
                sums[name] = sums.get(name, 0) + value.astype(np.float64).mean(axis=(2, 3)).sum(0)
                counts[name] = counts.get(name, 0) + len(value)
    return {n: sums[n] / counts[n] for n in wanted}


def bias_correct(fp32: Path, int8: Path, calibration: np.ndarray, out: Path) -> int:
    """Empirical bias correction (Nagel et al. 2019, "Data-free quantization through weight
    equalization and bias correction"): rounding a conv's weights to the 7-bit grid moves each
    output channel's mean by (W - W_q) . E[x]; adding that to the float bias, then quantising
    again, cancels the shift (the weights' grid does not depend on the bias). Borders' zero padding
    is ignored. Writes the corrected float graph to `out`; returns how many convs were corrected.
    What it recovered for EfficientNet-Lite0 in 7 bits: docs/MODEL.md, "int8"."""
    model = onnx.load(str(fp32))
    floats = {t.name: t for t in model.graph.initializer}
    quantised = onnx.load(str(int8)).graph
    q_tensors = {t.name: numpy_helper.to_array(t) for t in quantised.initializer}
    producer = {out: n for n in quantised.node for out in n.output}
    q_convs = {n.name: n for n in quantised.node if n.op_type == "Conv"}
    means = conv_input_means(fp32, calibration)
    corrected = 0
    for conv in model.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 3 or conv.input[2] not in floats or conv.name not in q_convs:
            continue
        dq = producer.get(q_convs[conv.name].input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in q_tensors:
            continue  # left in float (--float-depthwise): nothing was rounded
        w = numpy_helper.to_array(floats[conv.input[1]]).astype(np.float64)
        scale = q_tensors[dq.input[1]].astype(np.float64).reshape(-1, *[1] * (w.ndim - 1))
        error = (w - q_tensors[dq.input[0]].astype(np.float64) * scale).sum(axis=(2, 3))  # (out, in / group)
        mean = means[conv.input[0]].reshape(-1, error.shape[1])  # (group, in / group)
        per_group = error.shape[0] // mean.shape[0]
        shift = np.einsum("oi,oi->o", error, np.repeat(mean, per_group, axis=0))
        bias = numpy_helper.to_array(floats[conv.input[2]]).astype(np.float64)
        floats[conv.input[2]].CopyFrom(numpy_helper.from_array((bias + shift).astype(np.float32), conv.input[2]))
        corrected += 1
    onnx.save(model, str(out))
    return corrected


def quantise(fp32: Path, int8: Path, calibration: np.ndarray, method: str, float_depthwise: bool = False,
             bias_correction: bool = True) -> None:  # fmt: skip
    prepared = fp32.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
    excluded = depthwise_nodes(prepared) if float_depthwise else []

    def run(source: Path) -> None:
        quantize_static(
            str(source), str(int8), Calibration(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            # Weights in 7 bits (-64..64): on x86 without VNNI the fused u8s8 kernels add pairs of
            # products in 16 bits (vpmaddubsw), 2 x 255 x 64 < 32,767 never saturates, so the fused
            # graph is exact on every CPU; with 8-bit weights it saturated (docs/MODEL.md, "int8").
            reduce_range=True,
            # The heavy ops, plus the ReLU/ReLU6 (Clip) after a conv: quantising them lets ONNX
            # Runtime give the conv output the activation's range (0..6) instead of the raw
            # pre-activation range, which cost EfficientNet-Lite0 9 points (92.8% -> 83.8% test).
            # Probabilities, averaging and resizing stay fp32 (a uint8 softmax would round every
            # probability to 1/255).
            op_types_to_quantize=QUANTISED_OPS,
            nodes_to_exclude=excluded,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )  # fmt: skip

    run(prepared)
    if bias_correction:  # a second pass from the corrected float graph
        corrected = fp32.with_suffix(".corrected.onnx")
        if bias_correct(prepared, int8, calibration, corrected):
            run(corrected)
        corrected.unlink()
    prepared.unlink()
    fuse_gelu_file(int8)  # one operator where PyTorch exported five (training.gelu)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return round(100.0 * float((probs.argmax(1) == labels).mean()), 2)


def per_class(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(1)
    return {c: round(100.0 * float((pred[labels == i] == i).mean()), 2) for i, c in enumerate(CLASSES)}


def confusion(probs: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(matrix, (labels, probs.argmax(1)), 1)
    return matrix.tolist()


def latency_ms(sess: ort.InferenceSession, runs: int = 200) -> float:
    """Median batch-1 latency (a quick figure for the metadata; benchmarks/ has the full suite)."""
    x = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    for _ in range(20):
        sess.run(None, {"image": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {"image": x})
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 3)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(paths: dict[str, Path], val_x: np.ndarray, val_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
            threads: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Validation and test accuracy, test probabilities, batch-1 latency and size of each file."""
    results: dict[str, dict[str, Any]] = {}
    for tag, path in paths.items():
        sess = session(path, threads)
        start = time.time()
        val_p, test_p = ort_probs(sess, val_x), ort_probs(sess, test_x)
        results[tag] = {"val": accuracy(val_p, val_y), "test": accuracy(test_p, test_y), "test_probs": test_p,
                        "latency_ms": latency_ms(session(path, 1)), "size_bytes": path.stat().st_size,
                        "images": {"val": len(val_y), "test": len(test_y)}, "eval_seconds": round(time.time() - start, 1)}  # fmt: skip
        print(f"{tag}: val {results[tag]['val']:.2f}%  test {results[tag]['test']:.2f}%  "
              f"batch-1 {results[tag]['latency_ms']} ms  {path.stat().st_size / 1e6:.1f} MB", flush=True)  # fmt: skip
    return results


def write_served(out: Path, name: str, int8: Path, results: dict[str, dict[str, Any]], test_y: np.ndarray,
                 described: dict[str, Any], lossless: dict[str, Any] | None = None, layout: str = "split") -> Path:  # fmt: skip
    """Copy the int8 file to `<out>/<name>.onnx` and write `<name>.json`: the measured fields
    (fp32 ones when an fp32 graph was measured), the contract, and `described` (how it was made)."""
    work = cache_dir() / "export" / name
    work.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(work / "test_predictions.npz", labels=test_y,
                        **{tag: r["test_probs"] for tag, r in results.items()})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.onnx"
    shutil.copyfile(int8, target)
    int8_probs = results["int8"]["test_probs"]
    acc = {f"{split}_{tag}": r[split] for tag, r in results.items() for split in ("val", "test")}
    meta = {
        "name": name,
        **described,
        "classes": list(CLASSES),
        "input": {"name": "image", "dtype": "uint8", "shape": ["N", 32, 32, 3], "layout": "NHWC", "color": "RGB",
                  "size": 32, "range": "0..255; scaling, normalisation and resizing happen inside the graph",
                  "preprocessing": "cifar_onnx.preprocess.decode_image: EXIF orientation, to RGB (alpha on "
                                   "white), first frame, centre square crop, bicubic antialiased resize to 32x32"},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", len(CLASSES)]},
        "accuracy": {**acc, **{k: v for k, v in (lossless or {}).items() if k.startswith("lossless")},
                     "images": {**results["int8"]["images"],
                                **({"lossless_val": lossless["images_lossless_val"]} if lossless else {})}},
        "per_class_test_int8": per_class(int8_probs, test_y),
        "confusion_test_int8": confusion(int8_probs, test_y),
        "size_bytes": {tag: r["size_bytes"] for tag, r in results.items()},
        "latency_ms_batch1_1thread": {tag: r["latency_ms"] for tag, r in results.items()},
        "dataset": DATASET_NOTE + LAYOUT_NOTES[layout],
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": ort.__version__, "numpy": np.__version__, "opset": OPSET},
        "sha256": sha256(target),
    }  # fmt: skip
    target.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB) and {target.with_suffix('.json')}")
    return target


# ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, action="append", required=True, help="run directory (repeat: ensemble)")
    p.add_argument("--name", default="cifar10", help="served model name: writes <out>/<name>.onnx and .json")
    p.add_argument("--title", help="human name shown on the page")
    p.add_argument("--out", type=Path, default=Path("model"))
    p.add_argument("--default", action="store_true", help="mark as the default served model")
    p.add_argument("--tta", type=int, choices=[0, 1, 2], help="force a TTA level (default: chosen on validation)")
    p.add_argument("--calibration-images", type=int, default=512)
    p.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "entropy"])
    add_source_arguments(p)
    p.add_argument("--limit", type=int, default=0, help="evaluate on N random val/test images (tests)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--float-depthwise", action="store_true", help=f"keep in float: {FLOAT_DEPTHWISE}")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    loaded = [load_run(run) for run in args.run]
    # Validation as the runs held it out: a run on every image but the clean hold-out (layout
    # "full") has trained on the 5,000-image split, so its validation is the hold-out's JPEG copies.
    layouts = {info.get("layout", "split") for _, info in loaded}
    data = load_cifar10(args.data_dir, args.download, layout="full" if layouts == {"full"} else "split")
    val_x, val_y, test_x, test_y = data.val.images, data.val.labels, data.test.images, data.test.labels
    if args.limit:  # a random subset: the arrays are ordered by class
        pick_val = np.random.default_rng(1).permutation(len(val_y))[: args.limit]
        pick_test = np.random.default_rng(2).permutation(len(test_y))[: args.limit]
        val_x, val_y, test_x, test_y = val_x[pick_val], val_y[pick_val], test_x[pick_test], test_y[pick_test]
    meta_members = {"members": [info for _, info in loaded]}
    clean = clean_positions(meta_members, data) if data.lossless else np.array([], dtype=np.int64)
    # Test-time augmentation is chosen on the clean hold-out where the runs held it out (what users
    # send), else on JPEG validation.
    tta_x, tta_y = (
        (data.lossless.clean.images[clean], data.lossless.clean.labels[clean]) if len(clean) >= 1000 else (val_x, val_y)
    )

    members, infos, levels = [], [], []
    for model, info in loaded:
        level, scores = choose_tta(model, info["name"], tta_x, tta_y, args.tta)
        info["tta"], info["tta_val_accuracy"] = level, scores
        info["tta_chosen_on"] = "clean hold-out" if tta_x is not val_x else "JPEG validation"
        members.append(model), infos.append(info), levels.append(level)
    served = Served(members, levels).eval()

    work = cache_dir() / "export" / args.name
    work.mkdir(parents=True, exist_ok=True)
    fp32, int8 = work / f"{args.name}.fp32.onnx", work / f"{args.name}.int8.onnx"
    export_onnx(served, fp32)

    probe = val_x[:256]
    drift = float(np.abs(ort_probs(session(fp32), probe) - torch_probs(served, probe)).max())
    print(f"ONNX Runtime fp32 vs torch, max |prob diff| on 256 images: {drift:.2e}", flush=True)
    if drift > 1e-3:
        sys.exit(f"the fp32 export disagrees with torch (max diff {drift}); refusing to continue")

    # Calibration: training images only (never validation or test), spread over the classes.
    rng = np.random.default_rng(0)
    calib = data.train.images[rng.permutation(len(data.train.images))[: args.calibration_images]]
    quantise(fp32, int8, calib, args.calibration, args.float_depthwise)

    results = measure({"fp32": fp32, "int8": int8}, val_x, val_y, test_x, test_y, args.threads)
    sess = session(int8, args.threads)
    lossless = measure_lossless(lambda x: ort_probs(sess, x), data, clean) if len(clean) else {}

    parameters, flops = served_size(served)
    names = [i["name"] for i in infos]
    write_served(args.out, args.name, int8, results, test_y, lossless=lossless, layout=data.layout, described={
        "title": args.title or " + ".join(names) + " (int8)",
        "default": args.default,
        "architecture": " + ".join(f"{n}: {REGISTRY[n].description}" for n in names),
        "members": [{k: v for k, v in i.items() if k not in ("environment",)} for i in infos],
        "test_time_augmentation": {i["name"]: i["tta"] for i in infos},
        "quantization": {"format": "QDQ static", "weights": "int8 per-channel symmetric, 7-bit range (reduce_range)", "weight_bits": 7,
                         "activations": "uint8 asymmetric",
                         "ops": QUANTISED_OPS, "calibration": f"{args.calibration}, {len(calib)} training images",
                         "tool": f"onnxruntime {ort.__version__}", "bias_correction": BIAS_CORRECTION,
                         **({"float_ops": FLOAT_DEPTHWISE} if args.float_depthwise else {})},
        "parameters": parameters,
        "flops_per_image": flops,
        # Summed over members: runs trained side by side (one per core) overlap in wall time.
        "training": {"wall_minutes": round(sum(i["wall_minutes"] for i in infos), 1),
                     "cpu_minutes": round(sum(i["cpu_minutes"] for i in infos), 1),
                     "commands": [i.get("command") for i in infos]},
        "export_command": " ".join(["python", "-m", "training.export", *(argv if argv is not None else sys.argv[1:])]),
        "machine": infos[0].get("environment", {}),
    })  # fmt: skip


if __name__ == "__main__":
    main()
