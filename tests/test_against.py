"""benchmarks.against: a git revision unpacked with its own code and model files, each model timed
through that revision's registry (served and forced unfused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import against


@pytest.mark.slow
def test_a_revision_is_unpacked_and_its_models_timed_by_its_own_code(tmp_path: Path) -> None:
    root = against.unpack("HEAD", tmp_path / "then")
    served = {p.stem for p in (root / "model").glob("*.onnx")}
    assert (root / "src" / "cifar_onnx" / "registry.py").exists() and served
    medians = against.model_medians(root, runs=3)
    assert set(medians) == served
    for name, m in medians.items():
        assert m["median_ms"] > 0 and m["unfused_ms"] > 0, name
        assert m["int8"].startswith("int8 "), m["int8"]  # how that code chose to run it


def test_an_unknown_revision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-revision"):
        against.unpack("no-such-revision", tmp_path / "then")
