"""The command line (a real subprocess) and the model contract checks at load time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_onnx.registry import ModelError, ModelStore, load_model
from cifar_onnx.settings import Settings
from tests.images import SAMPLES
from tests.tiny_model import write_tiny_model


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cifar_onnx.cli", *args], capture_output=True, text=True, timeout=120)


def test_predict_prints_json_lines(model_dir: Path) -> None:
    images = sorted(SAMPLES.glob("*.jpg"))[:3]
    done = run_cli("predict", "--json", "--top-k", "2", "--model-dir", str(model_dir), *map(str, images))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(p) for p in images]
    assert all(len(r["top_k"]) == 2 and r["model"] == "cifar10" for r in rows)


def test_predict_prints_a_table_reports_a_bad_file_and_fails(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    done = run_cli(
        "predict", "--model-dir", str(model_dir), str(SAMPLES / "cat.jpg"), str(bad), str(SAMPLES / "ship.jpg")
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "model: cifar10" and lines[1].split() == ["file", "class", "probability", "unsure", "runners-up"]
    assert lines[2].startswith(str(SAMPLES / "cat.jpg")) and lines[2].split()[1] == "cat" and "%" in lines[2]
    assert lines[3].split()[:2] == [str(bad), "error"] and "not an image format" in lines[3]
    assert lines[4].split()[1] == "ship"
    assert "1 of 3 file(s) could not be classified" in done.stderr


def test_predict_says_unsure_in_plain_output_and_takes_a_model(model_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    grey = tmp_path / "grey.png"  # none of the ten classes
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey)
    done = run_cli("predict", "--model-dir", str(model_dir), "--model", "vgg16_bn" if (model_dir / "vgg16_bn.onnx").exists()
                   else "cifar10", str(grey))  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = done.stdout.splitlines()[2]
    assert "UNSURE" in row.split() and f"{grey}: unsure." in done.stdout and "evidence" in done.stdout
    unknown = run_cli("predict", "--model-dir", str(model_dir), "--model", "nope", str(grey))
    assert unknown.returncode == 2 and "No model named 'nope'" in unknown.stderr


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"CIFAR_ONNX_PORT": "9000", "CIFAR_ONNX_MODEL_DIR": "/m", "CIFAR_ONNX_MAX_BATCH_FILES": "3"}
    )
    assert settings.port == 9000 and settings.model_dir == Path("/m") and settings.max_batch_files == 3
    with pytest.raises(SystemExit, match="CIFAR_ONNX_PORT"):
        Settings.from_env({"CIFAR_ONNX_PORT": "eighty"})


def test_metadata_that_does_not_fit_the_graph_is_refused(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path, "m")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["input"]["size"] = 64  # the graph takes 32x32
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="input"):
        load_model(path, threads=1)


def test_a_model_without_metadata_is_refused(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path, "m")
    path.with_suffix(".json").unlink()
    store = ModelStore(tmp_path)
    with pytest.raises(ModelError, match=r"metadata m\.json is missing"):
        store.load()
    assert not store.ready and "metadata m.json is missing" in (store.error or "")
    assert str(tmp_path) not in (store.error or ""), "no paths in what clients are told"


MEMORY_PROBE = """
import json, sys
from pathlib import Path
import numpy as np, psutil
from cifar_onnx.memory import release_large_allocations
from cifar_onnx.registry import load_model
release_large_allocations()  # as the service's start-up does
rss = lambda: psutil.Process().memory_info().rss / 2**20
first = load_model(Path(sys.argv[1]) / "efficientnet_lite0.onnx", 1)
loaded = rss()
first.predict(np.zeros((16, 32, 32, 3), np.uint8))  # twice the self-check's batch
after_batch = rss()
second = load_model(Path(sys.argv[1]) / "airbench.onnx", 1)
second.predict(np.zeros((16, 32, 32, 3), np.uint8))
print(json.dumps({"batch": after_batch - loaded, "second_model": rss() - after_batch}))
"""


TRIM_PROBE = """
import ctypes, json, psutil
from cifar_onnx.memory import trim_heap
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
rss = lambda: psutil.Process().memory_info().rss / 2**20
blocks = [libc.malloc(64 * 1024) for _ in range(800)]  # 50 MB of blocks below the mmap threshold
for block in blocks:
    libc.memset(block, 1, 64 * 1024)
pin = libc.malloc(64)  # above them, so that the heap's top cannot shrink by itself
for block in blocks:
    libc.free(block)
freed = rss()
print(json.dumps({"trimmed": trim_heap(), "returned_mb": freed - rss()}))
"""


def test_trim_heap_returns_freed_small_blocks_to_the_system() -> None:
    """What loading frees in small blocks stays resident in glibc's heap until trimmed."""
    done = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["trimmed"] and result["returned_mb"] > 40, result


def test_loading_gives_the_self_checks_memory_back_and_models_share_one_arena(model_dir: Path) -> None:
    """The self-check runs a batch of 8 at load; its activations must not stay resident (a batch
    of 16 after loading needs memory anew), and a second model's batch reuses the first's arena
    instead of growing one of its own."""
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(model_dir)], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    grown = json.loads(done.stdout.strip().splitlines()[-1])
    assert grown["batch"] > 25, grown
    assert grown["second_model"] < grown["batch"], grown
