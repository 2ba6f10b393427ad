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


def _run(machine: dict) -> dict:
    side = {"models": {"cifar10": {"median_ms": 4.0, "int8": "int8 fused", "unfused_ms": 8.0}},
            "http": {"1": {"p50_ms": 5.0, "p99_ms": 9.0, "rps": 200.0}, "32": {"p50_ms": 80.0, "p99_ms": 120.0, "rps": 400.0}}}  # fmt: skip
    return {
        "rev": "7add63a",
        "now_rev": "abc1234",
        "machine": machine,
        "rounds": 3,
        "sides": {"then": side, "now": side},
    }


def test_the_table_tells_two_cpus_of_one_name_apart_by_their_generation() -> None:
    base = {"cpu": "AMD EPYC", "cpu_flags": "avx2", "date": "2026-12-07 14:41 UTC"}
    newer = against.table(_run({**base, "cpu_generation": "family 25, model 1"}))
    older = against.table(_run(base))  # runs saved before the generation was recorded
    assert "AMD EPYC family 25, model 1 (avx2)," in newer.splitlines()[0]
    assert "AMD EPYC (avx2)," in older.splitlines()[0]
    assert "| `cifar10` | int8 fused | 4.0 | int8 fused | 4.0 | 1.00 | 8.0 | 2.00 |" in newer
