"""An augmentation study: the same recipe trained once per variant on the split layout, then judged
on the clean hold-out (what users' photos look like) beside JPEG validation, each variant against
the first by McNemar's exact test on the same 2,000 clean images (training.choose's noise).

    python -m training.study --model airbench \\
        --variant base='{}' --variant crops='{"crop_scale": 0.35}' \\
        --variant colour='{"colour": 0.3}' --variant blur='{"blur": 0.8}'

Each variant is a `python -m training.train` run in ~/.cache/cifar-onnx/runs/study-<model>-<name>
(resumable: run the same command again after an interruption); `--epochs` shortens every variant
alike. Prints a Markdown table; `--record docs/studies/NAME.json` keeps the results, from which
`python -m training.tables` renders the table where a document marks `study-NAME`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from training import train
from training.batches import to_float
from training.choose import beyond_noise, mcnemar_p
from training.data import cache_dir, load_cifar10
from training.export import load_run
from training.tables import study_table


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="airbench", choices=sorted(train.RECIPES))
    p.add_argument("--variant", action="append", required=True, help="NAME='{json recipe overrides}' (repeat)")
    p.add_argument("--epochs", type=int, help="the same shorter schedule for every variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", help="image-folder CIFAR-10; env CIFAR10_DIR")
    p.add_argument("--lossless-dir", help="the clean hold-out; env CIFAR10_LOSSLESS_DIR")
    p.add_argument("--record", type=Path, help="also write the results as JSON (docs/studies/NAME.json: "
                   "training.tables renders it as the table `study-NAME`)")  # fmt: skip
    return p


@torch.no_grad()
def clean_right(run: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which clean hold-out images the run's final network (one view, fp32) gets right."""
    model, _ = load_run(run)
    model.eval()
    preds = torch.cat([model(to_float(images[i : i + 500])).argmax(1) for i in range(0, len(images), 500)])
    return preds.numpy() == labels


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    variants = dict(v.split("=", 1) for v in args.variant)
    runs = {name: cache_dir() / "runs" / f"study-{args.model}-{name}" for name in variants}
    for name, overrides in variants.items():
        command = ["--model", args.model, "--layout", "split", "--set", overrides, "--threads", str(args.threads),
                   "--out", str(runs[name]), "--resume"]  # fmt: skip
        command += ["--epochs", str(args.epochs)] if args.epochs else []
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        command += ["--lossless-dir", args.lossless_dir] if args.lossless_dir else []
        train.train(train.parser().parse_args(command))
    data = load_cifar10(args.data_dir, False, args.lossless_dir)
    if data.lossless is None:
        raise SystemExit("the clean hold-out was not found: give --lossless-dir or CIFAR10_LOSSLESS_DIR")
    clean = data.lossless.clean
    right = {name: clean_right(run, clean.images, clean.labels) for name, run in runs.items()}
    first = next(iter(variants))
    record = {"model": args.model, "epochs": args.epochs or train.RECIPES[args.model]["epochs"], "layout": "split",
              "clean_images": len(clean.labels), "baseline": first, "command": "python -m training.study "
              + shlex.join(argv if argv is not None else sys.argv[1:]), "variants": []}  # fmt: skip
    for name, run in runs.items():
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        record["variants"].append({
            "name": name, "overrides": json.loads(variants[name]), "clean_right": int(right[name].sum()),
            "jpeg_val_acc": last["val_acc"], "p_against_baseline": mcnemar_p(right[name], right[first]),
            "beyond_noise": bool(beyond_noise(right[name], right[first]) or beyond_noise(right[first], right[name])),
        })  # fmt: skip
    print(study_table(record))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.record}; python -m training.tables renders it where a document marks it")


if __name__ == "__main__":
    main()
