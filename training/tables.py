"""The generated tables of the documents, rendered from their sources (the served models'
metadata, model/*.json): never typed twice, so they cannot drift from the files.

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
DOCUMENTS = (REPO / "README.md", REPO / "docs" / "MODEL.md")


def served(model_dir: Path = REPO / "model") -> list[dict[str, Any]]:
    """Every served model's metadata, the default first, then by name."""
    metas = [json.loads(p.read_text()) for p in sorted(model_dir.glob("*.json"))]
    return sorted(metas, key=lambda m: (not m.get("default"), m["name"]))


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


TABLES: dict[str, Callable[[list[dict[str, Any]]], str]] = {"accuracy": accuracy, "models": models}


def render(text: str, metas: list[dict[str, Any]]) -> str:
    """The document with each marked table replaced by its rendering."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)", re.S)
        text = pattern.sub(lambda match, make=make: match.group(1) + make(metas) + "\n" + match.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = p.parse_args(argv)
    metas, stale = served(), []
    for doc in DOCUMENTS:
        text = doc.read_text()
        fresh = render(text, metas)
        if fresh != text:
            stale.append(doc.relative_to(REPO))
            if not args.check:
                doc.write_text(fresh)
    if args.check and stale:
        print(f"generated tables differ from model/*.json in: {', '.join(map(str, stale))}; "
              "run python -m training.tables", file=sys.stderr)  # fmt: skip
        return 1
    print("tables " + ("up to date" if not stale else f"rewritten in {', '.join(map(str, stale))}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
