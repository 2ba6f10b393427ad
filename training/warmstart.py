"""Start training from a served VGG16-BN: its fp32 checkpoint when this machine still has it,
else the shipped int8 graph itself.

    python -m training.train --model vgg16_bn --init-from model/cifar10.onnx --cycle-minutes 120 ...

A served QDQ graph's weights are exactly int8 x scale; dequantised, they are the trained network
with BatchNorm folded into the convolutions. Put back into the torch VGG16-BN, every BN is first
the identity (the same function as the graph), then `VGG16BN.restore_norms` gives each BN its
conv's output statistics on training images with an affine that undoes them: still the same
function in eval mode, and normalised again in train mode, so whole-network SGD works. Either way
the network must agree with ONNX Runtime on the graph (argmax on >= 99% of 1,000 validation
images) before the first step, or the run stops.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.batches import random_images, to_float
from training.data import Split
from training.models import VGG16BN, Built, create_model

AGREEMENT = 0.99  # share of validation images whose argmax must match the served graph's


def served_vgg(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The graph's metadata and its one member, which must be a VGG16-BN."""
    meta = json.loads(path.with_suffix(".json").read_text())
    members = meta.get("members", [])
    if len(members) != 1 or members[0]["name"] != "vgg16_bn":
        sys.exit(f"{path} is not a single VGG16-BN (members: {[m['name'] for m in members]})")
    return meta, members[0]


def dequantised_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every Conv and Gemm node in graph order, as float32. In a QDQ graph
    both come from DequantizeLinear nodes over int8/int32 initializers: (q - zero) * scale, with
    per-output-channel scales on axis 0."""
    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(name in tensors for name in node.input):
            q, scale, zero = (tensors[name].astype(np.float64) for name in node.input)
            shape = (-1,) + (1,) * (q.ndim - 1) if scale.ndim else ()
            tensors[node.output[0]] = ((q - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)
    return [(tensors[n.input[1]], tensors[n.input[2]]) for n in graph.node if n.op_type in ("Conv", "Gemm")]


@torch.no_grad()
def rebuild_vgg(path: Path, options: dict[str, Any]) -> VGG16BN:
    model = create_model("vgg16_bn", **options, pretrained=False).model
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = dequantised_layers(path)
    if len(layers) != len(weights):
        sys.exit(f"{path} has {len(weights)} Conv/Gemm layers, VGG16-BN {options} has {len(layers)}")
    for layer, (w, b) in zip(layers, weights, strict=False):
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
    model.identity_norms()
    return model.eval()


@dataclass(frozen=True)
class WarmStart:
    built: Built
    options: dict[str, Any]  # the network's options (width, resolution), from the graph's recipe
    record: dict[str, Any]  # for run.json: what it started from and how well it matched


def agreement(path: Path, model: VGG16BN, level: int, images: np.ndarray, threads: int) -> float:
    """Share of `images` on which the torch network and ONNX Runtime on the graph agree (argmax)."""
    from training.export import Served, ort_probs, session, torch_probs

    served = ort_probs(session(path, threads), images)
    rebuilt = torch_probs(Served([model.eval()], [level]), images)
    return float((served.argmax(1) == rebuilt.argmax(1)).mean())


def origin(init: str) -> str:
    """Where a chain of warm starts began: cycle after cycle would otherwise nest one
    "(which began as: ...)" inside the next."""
    while init.startswith("warm start from ") and "(which began as: " in init:
        init = init.split("(which began as: ", 1)[1].removesuffix(")")
    return init


def warm_start(path: Path, train_images: np.ndarray, val: Split, threads: int = 2, check: int = 1000) -> WarmStart:

    meta, member = served_vgg(path)
    options = {k: v for k, v in member["recipe"]["model"].items() if k in ("width", "resolution")}
    level = meta["test_time_augmentation"]["vgg16_bn"]
    probe = val.images[:check]
    checkpoint = Path(member.get("checkpoint") or "/nonexistent")
    model, source = None, "graph"
    if checkpoint.is_file():  # exact fp32 weights, BatchNorm and all
        candidate = create_model("vgg16_bn", **options, pretrained=False).model
        candidate.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
        share = agreement(path, candidate, level, probe, threads)
        if share >= AGREEMENT:
            model, source = candidate, "checkpoint"
        else:
            print(f"{checkpoint} agrees with {path.name} on only {100 * share:.1f}%: another run's; using the graph")
    if model is None:
        model = rebuild_vgg(path, options)
        model.restore_norms(to_float(random_images(train_images, 2000, seed=0)))
        share = agreement(path, model, level, probe, threads)
    if share < AGREEMENT:
        sys.exit(f"the network rebuilt from {path} agrees with ONNX Runtime on {100 * share:.1f}% of "
                 f"{len(probe)} validation images (< {100 * AGREEMENT:.0f}%): refusing to train from it")  # fmt: skip
    what = (f"fp32 checkpoint of {path.name}" if source == "checkpoint" else
            f"{path.name}'s int8 weights, dequantised, BatchNorm put back from 2,000 random training images")  # fmt: skip
    print(f"warm start from {what}: same answer as ONNX Runtime on {100 * share:.1f}% of {len(probe)} "
          f"validation images", flush=True)  # fmt: skip
    init = f"warm start from {what} (which began as: {origin(member.get('init', 'unknown'))})"
    record = {"from": path.name, "sha256": meta.get("sha256"), "source": source, "agreement": round(share, 4),
              "images_checked": len(probe), "served_accuracy": meta.get("accuracy")}  # fmt: skip
    return WarmStart(Built(model.train(), init, True), options, record)
