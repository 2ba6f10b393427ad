"""Average exported models into one served ONNX graph, without their training checkpoints.

    python -m training.ensemble --member model/efficientnet_lite0 --member model/vgg16_bn \\
        --name cifar10 --default --title "EfficientNet-Lite0 + VGG16-BN ensemble (int8)"

Each member is a served model (`<path>.onnx` and its `.json`), already int8: its graph is
copied in whole (weights, quantisation and test-time augmentation as they were measured), all
members read the one uint8 input, and an ONNX `Mean` averages their probabilities. When every
member's fp32 export is still in the export cache, the fp32 ensemble is built and measured
too, so the int8 loss is known; otherwise the metadata has int8 figures only.
`training.export --run A --run B` does the same from checkpoints, with one calibration for all.

    python -m training.ensemble --rank --member model/airbench --member model/efficientnet_lite0 \
        --member model/vgg16_bn --member /tmp/c5/vgg16_bn

scores every combination of two or more of the members instead, best first by validation, and
writes nothing: each member runs once over the validation and test images, and a combination's
answer is the mean of its members' probabilities, which is what the merged graph computes.

    python -m training.ensemble --unpack model/cifar10 --out /tmp/members

does the reverse: each member of a served ensemble becomes a served file of its own (its graph
cut out unchanged, measured and described as an export would), so that it can join other
ensembles after its training checkpoint is gone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import compose, helper

from training.data import Cifar10, add_source_arguments, cache_dir, load_cifar10
from training.export import Served, measure, ort_probs, rebuilt, served_size, session, write_served
from training.holdout import clean_positions, measure_lossless
from training.models import REGISTRY


def merge(paths: list[Path]) -> onnx.ModelProto:
    """One graph: input `image` to every member (names prefixed m0_, m1_, ...), `probabilities`
    the mean of theirs. Members must share the served contract (checked by the service too)."""
    members = [compose.add_prefix(onnx.load(str(p)), f"m{i}_") for i, p in enumerate(paths)]
    first = members[0].graph
    image = onnx.ValueInfoProto()
    image.CopyFrom(first.input[0])
    image.name = "image"
    output = onnx.ValueInfoProto()
    output.CopyFrom(first.output[0])
    output.name = "probabilities"
    nodes, initializers, value_info = [], [], []
    for i, m in enumerate(members):
        nodes.append(helper.make_node("Identity", ["image"], [m.graph.input[0].name], name=f"m{i}_input"))
        nodes += m.graph.node
        initializers += m.graph.initializer
        value_info += m.graph.value_info
    nodes.append(helper.make_node("Mean", [m.graph.output[0].name for m in members], ["probabilities"], name="average"))
    graph = helper.make_graph(nodes, "ensemble", [image], [output], initializers, value_info=value_info)
    opsets: dict[str, int] = {}
    for m in members:
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              ir_version=max(m.ir_version for m in members), producer_name="cifar-onnx ensemble")  # fmt: skip
    onnx.checker.check_model(model)
    return model


def member_graphs(path: Path) -> list[onnx.ModelProto]:
    """The members of a graph `merge` wrote, each cut out as it was copied in (the nodes that feed
    one input of the final `Mean`), with the served contract's input and output names."""
    model = onnx.load(str(path))
    average = next((n for n in model.graph.node if n.op_type == "Mean" and n.name == "average"), None)
    if average is None:
        raise ValueError(f"{path} is not an ensemble written by training.ensemble (no Mean named 'average')")
    graphs = []
    for out in average.input:
        member = onnx.utils.Extractor(model).extract_model(["image"], [out])
        member.graph.node.append(helper.make_node("Identity", [out], ["probabilities"], name="output"))
        renamed = onnx.ValueInfoProto()
        renamed.CopyFrom(member.graph.output[0])
        renamed.name = "probabilities"
        member.graph.output.pop()
        member.graph.output.append(renamed)
        member.opset_import.extend(o for o in model.opset_import if o not in member.opset_import)
        member.ir_version = model.ir_version
        onnx.checker.check_model(member)
        graphs.append(member)
    return graphs


def unpacked_description(meta: dict[str, Any], index: int, argv: list[str]) -> dict[str, Any]:
    """Metadata fields of member `index` of an ensemble, from the ensemble's metadata; its size
    from its network rebuilt untrained (as training.export counts it)."""
    member = meta["members"][index]
    parameters, flops = served_size(
        Served([rebuilt(member["name"], member.get("recipe", {}).get("model", {}))], [member["tta"]])
    )
    calibration = meta["quantization"]["calibration"]
    prefix = "each member calibrated on its own: "
    if calibration.startswith(prefix):  # "<file>: <how>; <file>: <how>", in member order
        calibration = calibration.removeprefix(prefix).split("; ")[index].split(": ", 1)[1]
    machines = meta["machine"]
    per_member = all(isinstance(v, dict) for v in machines.values()) and len(machines) == len(meta["members"])
    return {
        "title": f"{member['name']}, member {index} of {meta['name']} (int8)",
        "default": False,
        "architecture": f"{member['name']}: {REGISTRY[member['name']].description}",
        "members": [member],
        "test_time_augmentation": {member["name"]: member["tta"]},
        "quantization": {**meta["quantization"], "calibration": calibration},
        "parameters": parameters,
        "flops_per_image": flops,
        "training": {"wall_minutes": member["wall_minutes"], "cpu_minutes": member["cpu_minutes"],
                     "commands": [member.get("command")]},
        "export_command": " ".join(["python", "-m", "training.ensemble", *argv]),
        "machine": list(machines.values())[index] if per_member else machines,
    }  # fmt: skip


def unpack(path: Path, args: argparse.Namespace, argv: list[str]) -> None:
    """Write each member of the ensemble at `path` as `<out>/<ensemble>_m<i>_<member>`, measured."""
    meta = json.loads(path.with_suffix(".json").read_text())
    graphs = member_graphs(path.with_suffix(".onnx"))
    if len(graphs) != len(meta["members"]):
        raise ValueError(f"{path}: {len(graphs)} member graphs but {len(meta['members'])} members in its metadata")
    datasets: dict[str, Cifar10] = {}
    for index, (graph, member) in enumerate(zip(graphs, meta["members"], strict=True)):
        name = f"{meta['name']}_m{index}_{member['name']}"
        work = cache_dir() / "export" / name
        work.mkdir(parents=True, exist_ok=True)
        int8 = work / f"{name}.int8.onnx"
        onnx.save(graph, str(int8))
        layout = member.get("layout", "split")
        if layout not in datasets:
            datasets[layout] = load_cifar10(args.data_dir, args.download, layout=layout)
        data = datasets[layout]
        results = measure({"int8": int8}, data.val.images, data.val.labels, data.test.images, data.test.labels,
                          args.threads)  # fmt: skip
        positions = clean_positions({"members": [member]}, data) if data.lossless else np.array([], dtype=np.int64)
        probs = partial(ort_probs, session(int8, args.threads))
        lossless = measure_lossless(probs, data, positions) if len(positions) else {}
        write_served(args.out, name, int8, results, data.test.labels, unpacked_description(meta, index, argv),
                     lossless=lossless, layout=data.layout)  # fmt: skip


def described(metas: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """The ensemble's own metadata fields, from its members' metadata."""
    return {
        "title": args.title or " + ".join(m["name"] for m in metas) + " ensemble (int8)",
        "default": args.default,
        "architecture": " + ".join(m["architecture"] for m in metas),
        "members": [member for m in metas for member in m["members"]],
        "test_time_augmentation": {k: v for m in metas for k, v in m["test_time_augmentation"].items()},
        "quantization": {**metas[0]["quantization"], "calibration": "each member calibrated on its own: " +
                         "; ".join(f"{m['name']}: {m['quantization']['calibration']}" for m in metas)},
        "parameters": sum(m["parameters"] for m in metas),
        "flops_per_image": sum(m["flops_per_image"] for m in metas),
        "training": {"wall_minutes": round(sum(m["training"]["wall_minutes"] for m in metas), 1),
                     "cpu_minutes": round(sum(m["training"]["cpu_minutes"] for m in metas), 1),
                     "commands": [c for m in metas for c in m["training"]["commands"]]},
        "export_command": " ".join(["python", "-m", "training.ensemble", *argv]),
        "machine": {m["name"]: m["machine"] for m in metas},  # members may come from different machines
    }  # fmt: skip


def rank(members: list[Path], data: Cifar10, threads: int = 2) -> list[tuple[float, float, tuple[Path, ...]]]:
    """(val %, test %, members) of every combination of two or more members, best validation first."""
    splits = {"val": (data.val.images, data.val.labels), "test": (data.test.images, data.test.labels)}
    probs = {m: {k: ort_probs(session(m.with_suffix(".onnx"), threads), x) for k, (x, _) in splits.items()}
             for m in dict.fromkeys(members)}  # fmt: skip
    rows = []
    for size in range(2, len(members) + 1):
        for combo in itertools.combinations(members, size):
            val, test = (100 * float((np.mean([probs[m][k] for m in combo], axis=0).argmax(1) == y).mean())
                         for k, (_, y) in splits.items())  # fmt: skip
            rows.append((val, test, combo))
    return sorted(rows, key=lambda row: (-row[0], -row[1]))


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--member", type=Path, action="append", default=[], help="served model path without suffix")
    p.add_argument("--unpack", type=Path, help="an ensemble (path without suffix): write each member as its own file")
    p.add_argument("--name", help="writes <out>/<name>.onnx and .json")
    p.add_argument("--rank", action="store_true", help="score every combination of the members; write nothing")
    p.add_argument("--title")
    p.add_argument("--out", type=Path, default=Path("model"))
    p.add_argument("--default", action="store_true", help="mark as the default served model")
    add_source_arguments(p)
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.unpack:
        if args.member:
            p.error("--unpack takes no --member")
        unpack(args.unpack, args, argv)
        return
    if len(args.member) < 2:
        p.error("an ensemble needs at least two --member")
    if args.rank:
        for val, test, combo in rank(args.member, load_cifar10(args.data_dir, args.download), args.threads):
            print(f"val {val:6.2f}%  test {test:6.2f}%  {' + '.join(map(str, combo))}", flush=True)
        return
    if not args.name:
        p.error("--name is required unless --rank")

    metas = [json.loads(m.with_suffix(".json").read_text()) for m in args.member]
    work = cache_dir() / "export" / args.name
    work.mkdir(parents=True, exist_ok=True)
    graphs = {
        "int8": [m.with_suffix(".onnx") for m in args.member],
        "fp32": [cache_dir() / "export" / m["name"] / f"{m['name']}.fp32.onnx" for m in metas],
    }
    if not all(path.exists() for path in graphs["fp32"]):
        print("fp32 exports of the members are not all in the export cache: fp32 not measured", flush=True)
        del graphs["fp32"]
    files = {}
    for tag, paths in graphs.items():
        files[tag] = work / f"{args.name}.{tag}.onnx"
        onnx.save(merge(paths), str(files[tag]))

    members = {"members": [member for m in metas for member in m["members"]]}
    full = all(member.get("layout") == "full" for member in members["members"])
    data = load_cifar10(args.data_dir, args.download, layout="full" if full else "split")
    results = measure(dict(sorted(files.items())), data.val.images, data.val.labels, data.test.images,
                      data.test.labels, args.threads)  # fmt: skip
    singles = {m["name"]: m["accuracy"]["val_int8"] for m in metas}
    print(f"validation int8: ensemble {results['int8']['val']:.2f}% against members {singles}", flush=True)
    sess = session(files["int8"], args.threads)
    lossless = (
        measure_lossless(lambda x: ort_probs(sess, x), data, clean_positions(members, data)) if data.lossless else {}
    )
    write_served(args.out, args.name, files["int8"], results, data.test.labels, described(metas, args, argv),
                 lossless=lossless, layout=data.layout)  # fmt: skip


if __name__ == "__main__":
    main()
