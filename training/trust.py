"""Fit and measure how far each served model's answers can be trusted; write it into its metadata.

    python -m training.trust                 # every model in model/ (time: docs/MODEL.md, "Reproduce")
    python -m training.trust --only vgg16_bn # one model (after it was re-exported)

For each `model/<name>.onnx` (int8, as served):
1. Temperature scaling: one temperature T, fitted on the validation split by minimising the
   negative log-likelihood of softmax(log p / T) (`cifar_onnx.trust.apply_temperature`). Expected
   calibration error (15 equal-width bins) and NLL on the test split before and after.
2. `unsure`: the score is the evidence spread of the calibrated probabilities
   (`cifar_onnx.trust.evidence`); the threshold is the largest value that leaves at least 95% of
   the correctly classified validation images unflagged (their 5th percentile). Measured on the
   test split (share flagged) and on the offline out-of-distribution set of `training.ood` (share
   flagged, AUROC and FPR at 95% TPR of "CIFAR-10 or not"), beside the top probability, the score
   it was chosen over.
3. Explain: the pasted-object hit rate of `training.explain_check` (the true class explained).
Results go to `<name>.json` (`calibration`, `unsure`, `explain`); the graph is not changed (its
sha256 stays valid). With `--plots`, the default model's reliability diagram goes to docs/img/.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from cifar_onnx.cpu import cpu_model, relevant_flags
from cifar_onnx.explain import PATCH, STRIDE
from cifar_onnx.registry import ServedModel, load_model
from cifar_onnx.trust import apply_temperature, evidence
from training import explain_check, ood
from training.data import cache_dir, load_cifar10
from training.tables import calibration, explain, served, unsure

BINS = 15
TPR = 0.95


def probabilities(model: ServedModel, images: np.ndarray, batch: int = 250) -> np.ndarray:
    """The graph's own probabilities (before temperature), cached by model file and images: the
    int8 graphs run unfused (slowly) on CPUs without VNNI, and every step below reuses them."""
    key = hashlib.sha256(model.path.read_bytes() + images.tobytes()).hexdigest()[:16]
    cache = cache_dir() / "trust" / f"{model.name}-{key}.npy"
    if cache.exists():
        return np.load(cache)
    probs = np.concatenate([model.raw(images[i : i + batch]) for i in range(0, len(images), batch)])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, probs)
    return probs


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: |accuracy - confidence| per confidence bin, weighted by bin size."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising validation NLL: a coarse grid over log T, then golden-section refinement
    (NLL is convex in 1/T for a single network, and smooth in practice for ensembles)."""
    grid = np.linspace(np.log(0.25), np.log(4.0), 41)
    losses = [nll(apply_temperature(probs, float(np.exp(g))), labels) for g in grid]
    i = int(np.argmin(losses))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(apply_temperature(probs, float(np.exp(a))), labels) < nll(
            apply_temperature(probs, float(np.exp(b))), labels
        ):
            hi = b
        else:
            lo = a
    return round(float(np.exp((lo + hi) / 2)), 4)


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of a CIFAR-10 image > score of an outside one), ties counted half (Mann-Whitney U)."""
    scores = np.concatenate([inside, outside])
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    u = ranks[: len(inside)].sum() - len(inside) * (len(inside) + 1) / 2
    return float(u / (len(inside) * len(outside)))


def measure(
    model: ServedModel, data: Any, ood_images: np.ndarray, ood_kinds: np.ndarray, explain_items: list
) -> dict[str, Any]:
    val_raw, test_raw = probabilities(model, data.val.images), probabilities(model, data.test.images)
    temperature = fit_temperature(val_raw, data.val.labels)
    val_cal, test_cal = apply_temperature(val_raw, temperature), apply_temperature(test_raw, temperature)
    assert (test_cal.argmax(1) == test_raw.argmax(1)).all(), "temperature scaling changed a prediction"

    correct_val = val_cal.argmax(1) == data.val.labels
    ood_cal = apply_temperature(probabilities(model, ood_images), temperature)
    scores = {name: (fn(val_cal), fn(test_cal), fn(ood_cal)) for name, fn in SCORES.items()}
    detection = {name: detect(*values, correct_val, ood_kinds) for name, values in scores.items()}
    chosen = detection["evidence spread"]
    result = {
        "calibration": {
            "temperature": temperature, "method": "temperature scaling of log-probabilities, NLL on validation",
            "fitted_on": f"{'the clean hold-out, JPEG copies' if data.layout == 'full' else 'validation split'}, "
                         f"{len(data.val.labels):,} images",
            "test": {"ece_before": round(100 * ece(test_raw, data.test.labels), 2),
                     "ece_after": round(100 * ece(test_cal, data.test.labels), 2),
                     "nll_before": round(nll(test_raw, data.test.labels), 4),
                     "nll_after": round(nll(test_cal, data.test.labels), 4), "ece_bins": BINS, "ece_unit": "%"},
        },
        "unsure": {
            "score": "evidence spread: top log-probability minus mean log-probability (cifar_onnx.trust.evidence)",
            "threshold": chosen["threshold"],
            "rule": "unsure when the score is below the threshold; threshold = 5th percentile of the score on "
                    "correctly classified validation images",
            **{k: v for k, v in chosen.items() if k != "threshold"},
            "test_errors_flagged": round(100.0 * float((scores["evidence spread"][1] < chosen["threshold"])
                                                       [test_cal.argmax(1) != data.test.labels].mean()), 2),
            "ood_set": f"python -m training.ood: {len(ood_kinds)} offline pictures of none of the ten classes "
                       "(scikit-image/scikit-learn photos, digits, text, textures, noise, flat colours)",
            "other_scores": {k: v for k, v in detection.items() if k != "evidence spread"},
        },
        "explain": {"method": f"occlusion sensitivity, {PATCH}x{PATCH} patches every {STRIDE} px, mean-colour fill",
                    "pasted_object_hit_rate": explain_check.hit_rate(model, explain_items),
                    "check": "python -m training.explain_check"},
        "measured_on": {"cpu": cpu_model(), "flags": relevant_flags()},
    }  # fmt: skip
    return result


SCORES = {"evidence spread": evidence, "top probability": lambda probs: probs.max(1)}


def detect(
    val: np.ndarray, test: np.ndarray, outside: np.ndarray, correct_val: np.ndarray, kinds: np.ndarray
) -> dict[str, Any]:
    """One score's threshold (on validation) and how it separates CIFAR-10 test images from the
    out-of-distribution set: shares flagged, AUROC, and the FPR at 95% TPR."""
    threshold = float(np.floor(np.quantile(val[correct_val], 1 - TPR) * 1e4) / 1e4)
    at_95 = np.quantile(test, 1 - TPR)  # the score that keeps 95% of CIFAR-10 test images
    return {
        "threshold": threshold,
        "validation_correct_flagged": round(100.0 * float((val[correct_val] < threshold).mean()), 2),
        "test_flagged": round(100.0 * float((test < threshold).mean()), 2),
        "ood_flagged": round(100.0 * float((outside < threshold).mean()), 1),
        "ood_flagged_by_kind": {str(k): round(100.0 * float((outside[kinds == k] < threshold).mean()), 1) for k in np.unique(kinds)},
        "auroc": round(auroc(test, outside), 4),
        "fpr_at_95_tpr": round(100.0 * float((outside >= at_95).mean()), 1),
    }  # fmt: skip


def reliability_plot(
    probs_before: np.ndarray, probs_after: np.ndarray, labels: np.ndarray, title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    edges = np.linspace(0, 1, BINS + 1)
    for ax, probs, name in zip(axes, (probs_before, probs_after), ("as exported", "temperature-scaled"), strict=False):
        confidence, correct = probs.max(1), probs.argmax(1) == labels
        accs, confs, counts = [], [], []
        for lo, hi in itertools.pairwise(edges):
            inside = (confidence > lo) & (confidence <= hi)
            accs.append(correct[inside].mean() if inside.any() else 0)
            confs.append(confidence[inside].mean() if inside.any() else 0)
            counts.append(inside.sum())
        centres = (edges[:-1] + edges[1:]) / 2
        ax.bar(centres, accs, width=1 / BINS, edgecolor="black", color="#4c78a8", label="accuracy in bin")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.plot(centres[np.array(counts) > 0], np.array(confs)[np.array(counts) > 0], "o", color="#e45756", ms=4,
                label="mean confidence in bin")  # fmt: skip
        ax.set_title(f"{name}: ECE {100 * ece(probs, labels):.2f}%")
        ax.set_xlabel("top probability")
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tables(model_dir: Path) -> str:
    """docs/MODEL.md's trust tables, rendered from the metadata that `main` wrote."""
    metas = served(model_dir)
    return "\n\n".join(make(metas) for make in (calibration, unsure, explain))


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("model"))
    p.add_argument("--explain-count", type=int, default=300, help="pasted-object canvases per model")
    p.add_argument("--plots", type=Path, default=Path("docs/img"), help="where the reliability diagram goes")
    p.add_argument("--data-dir", help="image-folder CIFAR-10; env CIFAR10_DIR")
    p.add_argument("--download", action="store_true")
    p.add_argument(
        "--only", action="append", help="measure only this served model (repeat); the others keep their values"
    )
    p.add_argument("--dry-run", action="store_true", help="print, do not write the metadata")
    p.add_argument("--tables", action="store_true", help="only print docs/MODEL.md's tables from the metadata")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.tables:
        print(tables(args.model_dir))
        return

    # A file trained on every image but the clean hold-out (layout "full") saw the 5,000-image
    # validation split: its temperature and threshold are fitted on the hold-out's JPEG copies.
    datasets = {"split": load_cifar10(args.data_dir, args.download)}
    ood_images, ood_kinds = ood.build()
    items = explain_check.composites(datasets["split"].test.images, datasets["split"].test.labels, args.explain_count)
    for path in sorted(args.model_dir.glob("*.onnx")):
        if args.only and path.stem not in args.only:
            continue
        members = json.loads(path.with_suffix(".json").read_text()).get("members", [{}])
        layout = "full" if all(m.get("layout") == "full" for m in members) else "split"
        if layout not in datasets:  # read only when a file needs it (a folder without the hold-out has none)
            datasets[layout] = load_cifar10(args.data_dir, args.download, layout=layout)
        data = datasets[layout]
        model = load_model(path, threads=2)
        found = measure(model, data, ood_images, ood_kinds, items)
        print(path.stem, json.dumps(found), flush=True)
        if args.dry_run:
            continue
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text())
        meta.update({k: v for k, v in found.items() if k != "measured_on"})
        meta["trust_measured_on"] = found["measured_on"]
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        if meta.get("default") and args.plots:
            test_raw = probabilities(model, data.test.images)
            reliability_plot(test_raw, apply_temperature(test_raw, found["calibration"]["temperature"]), data.test.labels,
                             f"{path.stem} (int8), CIFAR-10 test (JPEG q75 copy), {BINS} bins",
                             args.plots / f"{path.stem}-reliability.png")  # fmt: skip


if __name__ == "__main__":
    main()
