"""The documents' generated tables match their sources (model/*.json), and the renderer replaces
exactly the marked span."""

from __future__ import annotations

from training import tables


def test_documents_match_the_served_metadata() -> None:
    assert tables.main(["--check"]) == 0, "run python -m training.tables"


def test_render_replaces_only_the_marked_table() -> None:
    meta = {"name": "m", "default": True, "accuracy": {"val_int8": 90.0, "test_int8": 89.5, "lossless_val_int8": 91.25,
                                                       "images": {"val": 5000, "test": 10000, "lossless_val": 2000}}}  # fmt: skip
    doc = "before\n<!-- table:accuracy -->\nstale row\n<!-- /table:accuracy -->\nafter\n"
    out = tables.render(doc, [meta])
    assert out.startswith("before\n<!-- table:accuracy -->\n| served model") and out.endswith(
        "<!-- /table:accuracy -->\nafter\n"
    )
    assert "| **`m`** (default) | 91.25% of 2,000 | not measured | 90.00% of 5,000 | 89.50% of 10,000 |" in out
    assert "stale row" not in out and tables.render(out, [meta]) == out
