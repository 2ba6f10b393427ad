"""The per-CPU table: each run of the suite replaces its own CPU's entry and leaves the others."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks import history
from benchmarks.load import inference_totals
from benchmarks.report import cpu_table
from tests.conftest import REPO


def results(cpu_flags: str, default_ms: float, p50: float, generation: str | None = None,
            server_mean: float | None = None) -> dict:  # fmt: skip
    """The parts of benchmarks.run's results that the history reads."""
    machine = {"cpu": "AMD EPYC", "cpu_flags": cpu_flags, "date": "2026-12-01 12:00 UTC"}
    if generation:
        machine["cpu_generation"] = generation
    return {
        "machine": machine,
        "default_model": "cifar10",
        "models": {
            "cifar10": {"ORT int8": {"int8_mode": "int8 fused", "batch1_1t": {"median_ms": default_ms}}},
            "vgg16_bn": {"ORT int8": {"batch1_1t": {"median_ms": 1.5}}},
        },
        "service": {"single": {1: {"p50_ms": p50} | ({"server_inference_mean_ms": server_mean} if server_mean else {}),
                               32: {"rps": 300.0, "p99_ms": 150.0}}},
    }  # fmt: skip


def test_a_run_replaces_its_own_cpu_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    history.record(results("avx2", 20.0, 25.0), "first", path)
    history.record(results("avx2 avx512_vnni", 3.0, 5.5), "second", path)
    entries = history.record(results("avx2", 10.0, 12.0), "third", path)

    assert [(e["cpu_flags"], e["source"]) for e in entries] == [("avx2 avx512_vnni", "second"), ("avx2", "third")]
    assert history.load(path) == entries
    avx2 = entries[1]
    assert avx2["http_overhead_ms"] == 2.0  # HTTP p50 minus the default model's own median
    assert avx2["models"]["vgg16_bn"]["int8_mode"] == "not recorded"


def test_the_table_has_a_row_per_cpu_and_model_with_http_figures_on_the_default(tmp_path: Path) -> None:
    entries = history.record(results("avx2", 10.0, 12.0), "run", tmp_path / "history.json")
    rows = [line for line in cpu_table(entries) if line.startswith("| AMD EPYC")]

    assert len(rows) == 2
    default, other = (r.split(" | ") for r in rows)
    assert default[1] == "`cifar10` (default)" and default[4:6] == ["12.0", "2.0"]
    assert other[1] == "`vgg16_bn`" and other[4] == ""
    assert cpu_table([]) == []


def test_two_cpus_with_one_name_and_the_same_flags_keep_their_own_rows(tmp_path: Path) -> None:
    """A first-generation EPYC and a Zen 3 both say "AMD EPYC" and avx2: the CPUID family and
    model tell them apart, and an entry from before it was recorded is not overwritten."""
    path = tmp_path / "history.json"
    history.record(results("avx2", 27.8, 31.4), "zen 3, before generations were recorded", path)
    history.record(results("avx2", 62.4, 62.8, "family 23, model 1"), "first EPYC", path)
    entries = history.record(results("avx2", 60.0, 61.0, "family 23, model 1"), "first EPYC again", path)
    assert [e["source"] for e in entries] == ["zen 3, before generations were recorded", "first EPYC again"]
    rows = [line for line in cpu_table(entries) if "(default)" in line]
    assert rows[0].startswith("| AMD EPYC (avx2)") and rows[1].startswith("| AMD EPYC family 23, model 1 (avx2)")


def test_the_overhead_is_also_taken_against_the_servers_own_inference_time(tmp_path: Path) -> None:
    entries = history.record(results("avx2", 10.0, 12.0, server_mean=9.5), "run", tmp_path / "history.json")
    assert entries[0]["http_overhead_ms"] == 2.0 and entries[0]["http_overhead_in_server_ms"] == 2.5
    default = next(r for r in cpu_table(entries) if "(default)" in r).split(" | ")
    assert default[5] == "2.0 (2.5)"
    old = history.record(results("avx512_vnni", 10.0, 12.0), "older run", tmp_path / "history.json")
    assert next(e for e in old if e["cpu_flags"] == "avx512_vnni")["http_overhead_in_server_ms"] is None


def test_the_overhead_is_taken_against_the_model_median_measured_right_after_the_level(tmp_path: Path) -> None:
    run = results("avx2", 10.0, 12.0)
    run["service"]["single"][1]["model_median_after_ms"] = 11.25
    assert history.record(run, "run", tmp_path / "history.json")[0]["http_overhead_ms"] == 0.75


def test_the_overhead_is_a_multiple_of_the_floor_measured_in_the_same_run(tmp_path: Path) -> None:
    run = results("avx2", 10.0, 12.0, server_mean=9.5)
    run["floor"] = {"single": {1: {"p50_ms": 1.25}}}
    entry = history.record(run, "run", tmp_path / "history.json")[0]
    assert entry["overhead_to_floor"] == 2.0 and entry["floor_p50_ms"] == 1.25
    default = next(r for r in cpu_table([entry]) if "(default)" in r).split(" | ")
    assert default[5] == "2.0 (2.5); 2.0x the floor's 1.25"


def test_the_floor_app_parses_and_decodes_an_upload() -> None:
    from litestar.testing import TestClient

    from benchmarks.floor_app import app

    with TestClient(app) as client:
        answer = client.post(
            "/api/v1/predict", files={"file": ("ship.jpg", (REPO / "tests/data/cifar/ship.jpg").read_bytes())}
        )
    assert answer.status_code == 200 and 0 < answer.json()["mean"] < 255


def test_median_now_times_the_served_model_in_a_fresh_process() -> None:
    from benchmarks.model_bench import median_now

    ms = median_now(REPO / "model" / "vgg16_bn.onnx", runs=5)
    assert 0.1 < ms < 1000


def test_the_servers_inference_totals_count_each_call(server: str) -> None:
    """What the benchmark reads around its concurrency-1 level, from the real server's /metrics."""
    image = (REPO / "tests" / "data" / "cifar" / "cat.jpg").read_bytes()
    name = httpx.post(server + "/api/v1/predict", files={"file": ("cat.jpg", image, "image/jpeg")}).json()["model"]
    seconds, calls = inference_totals(server, name)
    answer = httpx.post(server + "/api/v1/predict", files={"file": ("cat.jpg", image, "image/jpeg")}).json()
    after_seconds, after_calls = inference_totals(server, name)
    assert calls >= 1 and after_calls == calls + 1
    assert abs((after_seconds - seconds) * 1000 - answer["inference_ms"]) < 0.5


def test_results_md_is_rendered_from_its_sources(tmp_path: Path) -> None:
    """RESULTS.md is what the report makes of results.json and history.json: never edited by hand."""
    from benchmarks import run

    for name in ("results.json", "history.json"):
        (tmp_path / name).write_bytes((REPO / "benchmarks" / name).read_bytes())
    run.main(["--report-only", "--out", str(tmp_path)])
    assert (tmp_path / "RESULTS.md").read_text() == (REPO / "benchmarks" / "RESULTS.md").read_text(), (
        "benchmarks/RESULTS.md differs from its sources: python -m benchmarks.run --report-only"
    )


def test_report_only_adds_the_container_checks_scale_results(tmp_path: Path) -> None:
    """The container check's figures join a saved run without measuring again: kept in results.json
    for the next report, and reported."""
    import json

    from benchmarks import run

    for name in ("results.json", "history.json"):
        (tmp_path / name).write_bytes((REPO / "benchmarks" / name).read_bytes())
    scale = {
        "spread": {"per_replica": {"replica-a": 412, "replica-b": 398}},
        "kill": {"load": {"requests": 5021, "recovered_in_s": 7.5}, "failed": 3, "victim_restarts": 1},
    }
    (tmp_path / "scale.json").write_text(json.dumps(scale))
    run.main(["--report-only", "--out", str(tmp_path), "--scale-results", str(tmp_path / "scale.json")])
    assert json.loads((tmp_path / "results.json").read_text())["scale"] == scale
    report = (tmp_path / "RESULTS.md").read_text()
    assert "replica-a: 412" in report and "5,021 requests, **3 failed**" in report


def test_models_only_re_measures_the_model_level_and_keeps_the_rest(tmp_path: Path, monkeypatch) -> None:
    """After a served file changes, the model level alone is run again: the report says when, and the
    other sections stay those of the whole run. Another CPU's results are refused."""
    import json

    from benchmarks import run
    from benchmarks.common import machine

    saved = json.loads((REPO / "benchmarks" / "results.json").read_text())
    saved["machine"] = {**saved["machine"], **{k: machine()[k] for k in ("cpu", "cpu_flags", "cpu_generation")}}
    (tmp_path / "results.json").write_text(json.dumps(saved))
    whole_run = run.saved_results(tmp_path / "results.json")  # its concurrency levels as numbers again
    other = {**history.summary(whole_run, "a run elsewhere"), "cpu": "another CPU"}
    (tmp_path / "history.json").write_text(json.dumps([history.summary(whole_run, "the whole run"), other]))
    fresh = {"ORT int8": {**saved["models"]["airbench"]["ORT int8"], "cold_start_s": 9.876}}
    monkeypatch.setattr(run, "bench_model", lambda path, *_: fresh)
    (tmp_path / "model").mkdir()
    for meta in (REPO / "model").glob("*.json"):
        (tmp_path / "model" / meta.name).write_bytes(meta.read_bytes())

    run.main(["--models-only", "--out", str(tmp_path), "--model-dir", str(tmp_path / "model")])
    after = json.loads((tmp_path / "results.json").read_text())
    assert after["models"] == {m.stem: fresh for m in (REPO / "model").glob("*.json")}
    assert after["service"] == json.loads(json.dumps(saved["service"]))
    report = (tmp_path / "RESULTS.md").read_text()
    assert "9.876" in report and "Measured again on" in report and "--models-only" in report
    # The per-CPU table: this CPU's row takes the new figures and says so; another CPU's stays.
    mine, elsewhere = json.loads((tmp_path / "history.json").read_text())
    assert mine["models"]["airbench"]["batch1_ms"] == fresh["ORT int8"]["batch1_1t"]["median_ms"]
    assert "models_date" in mine and "models measured again" in report
    assert elsewhere == json.loads(json.dumps(other))

    saved["machine"]["cpu_flags"] = "another cpu"
    (tmp_path / "results.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="run the whole suite here"):
        run.main(["--models-only", "--out", str(tmp_path), "--model-dir", str(tmp_path / "model")])
