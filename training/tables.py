"""The generated tables of the documents, rendered from their sources (the served models'
metadata, model/*.json, and the recorded studies, docs/studies/*.json): never typed twice, so they
cannot drift from the files.

    python -m training.tables            # rewrite the tables in place
    python -m training.tables --check    # exit 1 if a document's table differs from its source (CI)

A document marks each table with `<!-- table:NAME -->` ... `<!-- /table:NAME -->`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = (REPO / "README.md", REPO / "README.uk.md", REPO / "docs" / "MODEL.md")


def served(model_dir: Path = REPO / "model") -> list[dict[str, Any]]:
    """Every served model's metadata, the default first, then by name."""
    metas = [json.loads(p.read_text()) for p in sorted(model_dir.glob("*.json"))]
    return sorted(metas, key=lambda m: (not m.get("default"), m["name"]))


def _table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _pct(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}%"


def accuracy(metas: list[dict[str, Any]]) -> str:
    """Clean hold-out beside JPEG validation and test, int8 as served."""
    rows = ["| served model | clean hold-out | the same images, JPEG copies | JPEG validation | JPEG test |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for m in metas:
        acc, images = m["accuracy"], m["accuracy"].get("images", {})
        name = f"**`{m['name']}`** (default)" if m.get("default") else f"`{m['name']}`"
        clean = f"{_pct(acc.get('lossless_val_int8'))} of {images.get('lossless_val', 0):,}"
        rows.append(f"| {name} | {clean} | {_pct(acc.get('lossless_val_jpeg_copies_int8'))} "
                    f"| {_pct(acc.get('val_int8'))} of {images.get('val', 0):,} | {_pct(acc.get('test_int8'))} "
                    f"of {images.get('test', 0):,} |")  # fmt: skip
    return "\n".join(rows)


def models(metas: list[dict[str, Any]]) -> str:
    """The README's summary: what each served file is, its accuracy (int8, as served) and size."""
    rows = ["| model | what it is | clean hold-out | JPEG test | int8 file |", "| --- | --- | --- | --- | --- |"]
    for m in metas:
        acc = m["accuracy"]
        name = f"**`{m['name']}`** (default)" if m.get("default") else f"`{m['name']}`"
        title = m.get("title", "").removesuffix(" (int8)")
        rows.append(f"| {name} | {title} | {_pct(acc.get('lossless_val_int8'))} of "
                    f"{acc.get('images', {}).get('lossless_val', 0):,} | {_pct(acc.get('test_int8'))} "
                    f"| {m['size_bytes']['int8'] / 1e6:.1f} MB |")  # fmt: skip
    return "\n".join(rows)


def _networks(metas: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(file name, member) for every served file that is one network (ensembles reuse theirs)."""
    return [(m["name"], m["members"][0]) for m in metas if len(m.get("members", [])) == 1]


def _schedule(recipe: dict[str, Any]) -> str:
    start, warm, end = recipe["schedule"]
    shape = recipe.get("schedule_shape", "linear")
    return f"{start:g}x → 1x over {warm:.0%} of steps, {shape} → {end:g}x"


def _optimiser(recipe: dict[str, Any]) -> str:
    if recipe["optimizer"] == "adamw":
        return f"AdamW, lr {recipe['lr']:g} (body {recipe['body_lr_scale']:.2g}x)"
    nesterov = "Nesterov, " if recipe.get("nesterov") else ""
    return f"SGD, {nesterov}momentum {recipe['momentum']:g}, lr {recipe['lr']:g}"


def _augmentation(recipe: dict[str, Any]) -> str:
    crop = recipe.get("crop_scale")
    parts = [f"flip ({recipe['flip']})", f"resized crops {crop:g}-1" if crop else f"translate {recipe['translate']} px"]
    parts += [f"colour +-{recipe['colour']:g}"] if recipe.get("colour") else []
    parts += [f"blur/sharpen {recipe['blur']:g}"] if recipe.get("blur") else []
    parts += [f"cutout {recipe['cutout']} px"] if recipe.get("cutout") else []
    parts += [f"CutMix (p {recipe['cutmix']:g})"] if recipe.get("cutmix") else []
    return ", ".join(parts)


def _distillation(recipe: dict[str, Any]) -> str:
    if not recipe.get("distill_alpha"):
        return "none"
    return f"from served files, weight {recipe['distill_alpha']:g}, T {recipe['distill_temperature']:g}"


RECIPE_ROWS: dict[str, Callable[[dict[str, Any]], str]] = {
    "start": lambda mb: mb["init"].split(" (which began as")[0],
    "training images": lambda mb: (
        "48,000 (all but the clean hold-out)" if mb.get("layout") == "full" else "45,000 (split)"
    ),
    "input side": lambda mb: f"{mb['recipe']['model'].get('resolution', 32)} px",
    "epochs, batch": lambda mb: f"{mb['epochs']}, {mb['recipe']['batch_size']}",
    "optimiser": lambda mb: _optimiser(mb["recipe"]),
    "weight decay": lambda mb: f"{mb['recipe']['weight_decay']:g}",
    "learning-rate schedule": lambda mb: _schedule(mb["recipe"]),
    "label smoothing": lambda mb: f"{mb['recipe']['label_smoothing']:g}",
    "augmentation": lambda mb: _augmentation(mb["recipe"]),
    "weight averaging": lambda mb: "Lookahead EMA" if mb["recipe"].get("lookahead") else "none",
    "distillation": lambda mb: _distillation(mb["recipe"]),
    "precision": lambda mb: (mb.get("precision") or {}).get("used", "fp32"),
    "test-time views": lambda mb: {0: "1", 1: "2 (mirror)", 2: "6 (mirror, 1-px shifts)"}[int(mb["tta"])],
    "wall / CPU minutes": lambda mb: f"{mb['wall_minutes']:.0f} / {mb['cpu_minutes']:.0f}",
}


def recipes(metas: list[dict[str, Any]]) -> str:
    """How each served network was trained, read from the recipe its metadata recorded."""
    nets = _networks(metas)
    rows = ["| | " + " | ".join(f"`{name}`" for name, _ in nets) + " |", "| --- " * (len(nets) + 1) + "|"]
    rows += [f"| {label} | " + " | ".join(row(mb) for _, mb in nets) + " |" for label, row in RECIPE_ROWS.items()]
    return "\n".join(rows)


def int8(metas: list[dict[str, Any]]) -> str:
    """What int8 costs: test accuracy and file size of the fp32 export against the served int8 file."""
    rows = ["| served model | JPEG test fp32 | JPEG test int8 | weight bits | parameters | GFLOP / image (with TTA) "
            "| file fp32 | file int8 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for m in metas:
        acc, size = m["accuracy"], m["size_bytes"]
        fp32 = f"{size['fp32'] / 1e6:.1f} MB" if "fp32" in size else "not exported"
        rows.append(f"| `{m['name']}` | {_pct(acc.get('test_fp32'))} | {_pct(acc['test_int8'])} "
                    f"| {m['quantization'].get('weight_bits', 8)} | {m['parameters'] / 1e6:.2f} M "
                    f"| {m['flops_per_image'] / 1e9:.2f} | {fp32} | {size['int8'] / 1e6:.1f} MB |")  # fmt: skip
    return "\n".join(rows)


def calibration(metas: list[dict[str, Any]]) -> str:
    """Temperature scaling, on the JPEG test set (15 equal-width bins)."""
    rows = [[f"`{m['name']}`", c["temperature"], c["fitted_on"], f"{c['test']['ece_before']}%",
             f"{c['test']['ece_after']}%", c["test"]["nll_before"], c["test"]["nll_after"]]
            for m in metas for c in [m["calibration"]]]  # fmt: skip
    return _table(["model", "temperature", "fitted on", "ECE before", "ECE after", "NLL before", "NLL after"], rows)


def unsure(metas: list[dict[str, Any]]) -> str:
    """The two out-of-distribution scores measured for each model; the served one first."""
    rows = []
    for m in metas:
        u = m["unsure"]
        for name, d in [("evidence spread (served)", u), *u["other_scores"].items()]:
            kinds = ", ".join(f"{k} {v:.0f}%" for k, v in d["ood_flagged_by_kind"].items())
            rows.append([f"`{m['name']}`", name, f"{d['threshold']:.3f}", f"{d['test_flagged']}%",
                         f"{u['test_errors_flagged']}%" if d is u else "", f"{d['ood_flagged']}%",
                         f"{d['auroc']:.3f}", f"{d['fpr_at_95_tpr']}%", kinds])  # fmt: skip
    return _table(["model", "score", "threshold", "CIFAR-10 test flagged", "its errors flagged", "OOD flagged",
                   "AUROC", "FPR at 95% TPR", "OOD flagged by kind"], rows)  # fmt: skip


def explain(metas: list[dict[str, Any]]) -> str:
    """The explanation check: how often the map's peak lies on a pasted object."""
    rows = [[f"`{m['name']}`", f"{h['all']}%", f"{h['plain']}%", f"{h['noise']}%", h["count"]]
            for m in metas for h in [m["explain"]["pasted_object_hit_rate"]]]  # fmt: skip
    return _table(["model", "pasted-object hit rate", "plain background", "noise background", "canvases"], rows)


def per_class(metas: list[dict[str, Any]]) -> str:
    """JPEG test accuracy per class, int8 as served."""
    classes = metas[0]["classes"]
    rows = [[f"`{m['name']}`", *(f"{m['per_class_test_int8'][c]:.1f}" for c in classes)] for m in metas]
    return _table(["model", *classes], rows)


VIEWS = {0: 1, 1: 2, 2: 6}  # test-time augmentation level -> views (none; mirror; mirror and 1-px shifts)


def tta(metas: list[dict[str, Any]]) -> str:
    """Each served network's accuracy by test-time augmentation level (fp32, measured by the export
    on the set it chose on; int8 where training.views added a level) beside what each level costs."""
    rows = ["| network | chosen on | 1 view | 2 views (mirror) | 6 views (mirror, shifts) | served | GFLOP / image "
            "at 1 / 2 / 6 views |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, member in _networks(metas):
        scores = {int(k): f"{v:.2f}%" for k, v in member["tta_val_accuracy"].items()}
        # Levels added to the served int8 graph after its checkpoint was gone (training.views).
        int8 = {int(k): f"{v:.2f}% (int8)" for k, v in member.get("tta_val_accuracy_int8", {}).items()}
        scores = {**int8, **scores}
        served_views = VIEWS[int(member["tta"])]
        per_view = next(m for m in metas if m["name"] == name)["flops_per_image"] / served_views / 1e9
        cells = [scores.get(level, "not measured") for level in VIEWS]
        where = member.get("tta_chosen_on", "JPEG validation")
        costs = " / ".join(f"{per_view * v:.2f}" for v in VIEWS.values())
        served = f"{served_views} view" + ("s" if served_views > 1 else "")
        rows.append(f"| `{name}` | {where} | {' | '.join(cells)} | {served} | {costs} |")
    return "\n".join(rows)


def study_table(record: dict[str, Any]) -> str:
    """An augmentation study (training.study): each variant on the clean hold-out and JPEG
    validation, and its paired difference from the baseline in images."""
    n, base = record["clean_images"], record["baseline"]
    right = {v["name"]: v["clean_right"] for v in record["variants"]}
    rows = []
    for v in record["variants"]:
        verdict = "-" if v["name"] == base else (f"{right[v['name']] - right[base]:+d} images, p = "
                  f"{v['p_against_baseline']:.3f} ({'beyond noise' if v['beyond_noise'] else 'noise'})")  # fmt: skip
        rows.append([v["name"], f"`{json.dumps(v['overrides'])}`", _pct(100 * v["clean_right"] / n),
                     _pct(v["jpeg_val_acc"]), verdict])  # fmt: skip
    return _table(
        ["variant", "recipe overrides", f"clean hold-out ({n:,})", "JPEG validation", f"against {base}"], rows
    )


STUDIES = REPO / "docs" / "studies"


def _study(path: Path) -> Callable[[list[dict[str, Any]]], str]:
    return lambda metas: study_table(json.loads(path.read_text()))


TABLES: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "tta": tta,
    "per_class": per_class,
    "accuracy": accuracy, "models": models, "recipes": recipes, "int8": int8,
    "calibration": calibration, "unsure": unsure, "explain": explain,
}  # fmt: skip
TABLES.update({f"study-{path.stem}": _study(path) for path in sorted(STUDIES.glob("*.json"))})


def render(text: str, metas: list[dict[str, Any]]) -> str:
    """The document with each marked table replaced by its rendering."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)", re.S)
        text = pattern.sub(lambda match, make=make: match.group(1) + make(metas) + "\n" + match.group(2), text)
    return text


def parser() -> argparse.ArgumentParser:
    """The command line (the documents' commands are checked against it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    metas, stale = served(), []
    for doc in DOCUMENTS:
        text = doc.read_text()
        fresh = render(text, metas)
        if fresh != text:
            stale.append(doc.relative_to(REPO))
            if not args.check:
                doc.write_text(fresh)
    if args.check and stale:
        print(f"generated tables differ from their sources in: {', '.join(map(str, stale))}; "
              "run python -m training.tables", file=sys.stderr)  # fmt: skip
        return 1
    print("tables " + ("up to date" if not stale else f"rewritten in {', '.join(map(str, stale))}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
