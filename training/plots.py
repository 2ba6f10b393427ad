"""Figures for docs/MODEL.md from a run's metrics and an exported model's test predictions.

    python -m training.plots --run ~/.cache/cifar-onnx/runs/airbench --model model/cifar10.json --out docs/img

`--history docs/img/<name>-history.json` puts an earlier run, whose run folder is gone, on the
accuracy-against-CPU-time figure from the history this script saved for it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from training.data import CLASSES, cache_dir, load_cifar10

SPLITS = (("train", "tab:blue"), ("val", "tab:orange"), ("test", "tab:green"), ("lossless", "tab:red"))
LABELS = {"val": "validation (JPEG)", "test": "test (JPEG)", "lossless": "clean hold-out (lossless)"}


def curves(history: list[dict], title: str, path: Path, smoothing: float = 0.0) -> None:
    """Loss and accuracy per epoch on train (augmented, running mean over the epoch),
    validation, test and, for runs since it existed, the clean hold-out. `smoothing`: the
    run's label smoothing, which lifts the train loss above the others."""
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, colour in SPLITS:
        if f"{split}_acc" not in history[0]:
            continue  # runs from before the clean hold-out
        label = LABELS.get(split, split)
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], "o-", ms=3, color=colour, label=label)
        acc_ax.plot(epochs, [r[f"{split}_acc"] for r in history], "o-", ms=3, color=colour, label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    best = max(r["val_acc"] for r in history)
    acc_ax.set_ylim(max(0, min(r["val_acc"] for r in history) - 5), 100)
    acc_ax.axhline(best, color="tab:orange", lw=0.6, ls=":")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    on = f"label smoothing {smoothing:g} and augmentation" if smoothing else "augmentation"
    fig.suptitle(f"{title} (train figures on {on})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_against_cpu_time(histories: dict[str, list[dict]], path: Path) -> None:
    """Validation accuracy against the process CPU time spent so far: runs compared at equal cost."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, history in histories.items():
        ax.plot([r["cpu_s"] / 60 for r in history], [r["val_acc"] for r in history], "o-", ms=3, label=name)
    ax.set(xlabel="process CPU time (minutes)", ylabel="validation accuracy (%)",
           title="Validation accuracy against training cost (no test-time augmentation)")  # fmt: skip
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_matrix(matrix: list[list[int]], title: str, path: Path) -> None:
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.imshow(m, cmap="Blues")
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(
                j, i, m[i, j], ha="center", va="center", fontsize=7, color="white" if m[i, j] > m.max() / 2 else "black"
            )
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mistakes(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, path: Path, count: int = 24) -> None:
    """The most confident mistakes: what the model gets wrong while sure of itself."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:count]
    cols = 8
    fig, axes = plt.subplots(len(wrong) // cols or 1, cols, figsize=(cols * 1.35, (len(wrong) // cols or 1) * 1.95))
    for ax, i in zip(np.ravel(axes), wrong, strict=False):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(f"{CLASSES[pred[i]]} {probs[i, pred[i]]:.0%}\n(is {CLASSES[labels[i]]})", fontsize=7)
        ax.axis("off")
    fig.suptitle("Most confident mistakes on the test set: predicted (true)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, action="append", default=[], help="run directory: training curves")
    p.add_argument("--history", type=Path, action="append", default=[], help="a saved <name>-history.json: "
                   "that run on the CPU-time figure only")  # fmt: skip
    p.add_argument("--model", type=Path, help="exported model metadata (model/<name>.json)")
    p.add_argument("--compare", default="accuracy-vs-cpu-time", help="file name (no .png) of the figure that "
                   "puts two or more runs on one CPU-time axis")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--data-dir")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    histories = {path.name.removesuffix("-history.json"): json.loads(path.read_text()) for path in args.history}
    for run in args.run:
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        name = run.name  # the run folder: two runs of one architecture (say two widths) differ here
        histories[name] = history
        record = run / "run.json"
        recipe = json.loads(record.read_text()).get("recipe", {}) if record.exists() else {}
        curves(history, name, args.out / f"{name}-curves.png", recipe.get("label_smoothing", 0.0))
        (args.out / f"{name}-history.json").write_text(json.dumps(history, indent=1))
    if len(histories) > 1:
        accuracy_against_cpu_time(histories, args.out / f"{args.compare}.png")
    if args.model:
        meta = json.loads(args.model.read_text())
        confusion_matrix(
            meta["confusion_test_int8"],
            f"{meta['name']} int8: test confusion",
            args.out / f"{meta['name']}-confusion.png",
        )
        saved = np.load(cache_dir() / "export" / meta["name"] / "test_predictions.npz")
        data = load_cifar10(args.data_dir)
        if len(saved["labels"]) == len(data.test.labels):
            mistakes(data.test.images, data.test.labels, saved["int8"], args.out / f"{meta['name']}-mistakes.png")


if __name__ == "__main__":
    main()
