"""Training cycles that start from what is served (training.warmstart), and data-parallel training
(training.compute): a run under torchrun with two gloo processes on the CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar_onnx.preprocess import decode_image
from tests.conftest import REPO, dataset_dir, served_vgg
from tests.test_training_e2e import CLASSES, tiny_folder, tool_env

torch = pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")

from training.data import Split  # noqa: E402
from training.warmstart import AGREEMENT, warm_start  # noqa: E402

SHIPPED_VGG = served_vgg()


def real_images(part: str, per_class: int) -> Split:
    """The first `per_class` images of each class of the CIFAR-10 folder, decoded as the service does."""
    root = dataset_dir()
    if root is None:
        pytest.skip("needs the CIFAR-10 folder (CIFAR10_DIR or ../shared/data/cifar10)")
    files = [(root / part / name / f"{i:04d}.jpg", c) for c, name in enumerate(CLASSES) for i in range(per_class)]
    return Split(np.stack([decode_image(f.read_bytes()) for f, _ in files]), np.array([c for _, c in files]))


def served_member_init() -> str:
    return json.loads(SHIPPED_VGG.with_suffix(".json").read_text())["members"][0]["init"]


def served_copy(tmp_path: Path, checkpoint: Path | None) -> Path:
    """The shipped VGG graph beside metadata whose member names `checkpoint` as its fp32 weights."""
    path = tmp_path / "vgg.onnx"
    shutil.copy(SHIPPED_VGG, path)
    meta = json.loads(SHIPPED_VGG.with_suffix(".json").read_text())
    meta["members"][0]["checkpoint"] = str(checkpoint) if checkpoint else "/gone/final.pt"
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


@pytest.mark.slow  # the full-width VGG16-BN through ONNX Runtime and torch: minutes on a slow CPU
@pytest.mark.dataset
def test_graph_rebuilt_with_batchnorm_put_back_answers_as_onnx_runtime(tmp_path: Path) -> None:
    train, val = real_images("train", 50), real_images("test", 100)
    start = warm_start(served_copy(tmp_path, None), train.images, val, threads=2)
    assert start.record["source"] == "graph" and start.record["images_checked"] == 1000
    assert start.record["agreement"] >= AGREEMENT
    recipe = json.loads(SHIPPED_VGG.with_suffix(".json").read_text())["members"][0]["recipe"]["model"]
    assert start.options == {k: recipe[k] for k in ("width", "resolution")}
    norms = [m for m in start.built.model.features if isinstance(m, torch.nn.BatchNorm2d)]
    # Fitted, not the identity: statistics of real activations, and an affine that undoes them.
    assert all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var), atol=0.05) for bn in norms)
    assert all(torch.allclose(bn.weight, (bn.running_var + bn.eps).sqrt()) for bn in norms)
    assert start.built.model.training, "handed over ready to train"
    # Cycle after cycle, the provenance names the first origin once instead of nesting each start.
    assert start.built.init.count("(which began as: ") == 1
    first = start.built.init.split("(which began as: ", 1)[1]
    assert not first.startswith("warm start") and first.removesuffix(")") in served_member_init()

    # The fp32 checkpoint comes first when this machine has it (here: those same weights saved).
    saved = tmp_path / "final.pt"
    torch.save({"model": start.built.model.state_dict()}, saved)
    again = warm_start(served_copy(tmp_path, saved), train.images, val, threads=2)
    assert again.record["source"] == "checkpoint" and "fp32 checkpoint" in again.built.init

    # A checkpoint that is not this graph's weights (another run's) is not trusted: the graph is used.
    other = start.built.model.state_dict()
    other["head.3.weight"] = torch.randn_like(other["head.3.weight"]) * other["head.3.weight"].std() * 3
    torch.save({"model": other}, saved)
    assert warm_start(served_copy(tmp_path, saved), train.images, val, threads=2).record["source"] == "graph"


def test_a_graph_that_is_not_a_vgg_is_refused(tmp_path: Path) -> None:
    split = Split(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int64))
    with pytest.raises(SystemExit, match="is not a single VGG16-BN"):
        warm_start(REPO / "model" / "airbench.onnx", split.images, split)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_learn_and_stay_identical(tmp_path: Path) -> None:
    data = tiny_folder(tmp_path / "cifar", per_class_train=20, per_class_test=5)
    env = {**tool_env(tmp_path), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    recipe = {"model": {"width": 0.125, "resolution": 32}, "batch_size": 32, "lr": 0.05, "cutout": 0}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "training.train", "--model", "vgg16_bn", "--data-dir", str(data),
                           "--out", str(run_dir), "--epochs", "4", "--threads", "1", "--precision", "fp32",
                           "--set", json.dumps(recipe)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["compute"] == {"device": "cpu", "precision": "fp32", "processes": 2}
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 4, "rank 0 alone writes the log"
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1, history
    digests = torch.load(run_dir / "final.pt", weights_only=False)["state"]["weights_digest_per_process"]
    assert len(digests) == 2 and digests[0] == digests[1], "the two processes' weights drifted apart"
