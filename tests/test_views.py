"""training.views: the shifted test-time views added around a served graph that mirrors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cifar_onnx.registry import load_model
from tests.conftest import REPO, SHIPPED
from tests.test_holdout_and_choice import synthetic_folder
from tests.test_training_e2e import run, tool_env

pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")
from training.tables import tta
from training.views import with_shifts


def position_sensitive_graph() -> onnx.ModelProto:
    """uint8 (N, 32, 32, 3) -> softmax of a random linear map of every pixel: a one-pixel shift
    changes its answer, so views shifted the wrong way (or not at all) are caught."""
    weights = np.random.default_rng(0).normal(scale=5e-4, size=(32 * 32 * 3, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "linear",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def probs(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": images})[0]


def test_views_are_level_2_of_the_wrapped_graph() -> None:
    """The wrapped graph's answer is softmax(0.5 log p(x) + 0.25 log p(x shifted up-left) + 0.25
    log p(x shifted down-right)), shifts reflect-padded, as training.export's level 2 over logits."""
    inner = position_sensitive_graph()
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [probs(inner, v) for v in (images, padded[:, :-2, :-2], padded[:, 2:, 2:])]
    mean = 0.5 * np.log(views[0]) + 0.25 * (np.log(views[1]) + np.log(views[2]))
    expected = np.exp(mean - mean.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    wrapped = probs(with_shifts(inner), images)
    assert wrapped.shape == (4, 10) and np.allclose(wrapped, expected, atol=1e-6)
    assert not np.allclose(wrapped, views[0], atol=1e-3), "the views must change this graph's answer"
    assert probs(with_shifts(inner), images[:1]).shape == (1, 10), "any batch size"


def single_level_1() -> Path:
    """A shipped file that is one network serving the image and its mirror."""
    for meta in sorted(SHIPPED.glob("*.json")):
        if list(json.loads(meta.read_text())["test_time_augmentation"].values()) == [1]:
            return meta.with_suffix("")
    raise FileNotFoundError("no shipped single network at test-time level 1")


@pytest.mark.slow
def test_views_cli_measures_describes_and_refuses(tmp_path: Path) -> None:
    # Shipped files are trained on the full layout, whose validation is the clean hold-out's JPEG
    # copies: a drawn folder with a four-image hold-out stands in for both.
    data, lossless, _ = synthetic_folder(tmp_path)
    env = {**tool_env(tmp_path), "CIFAR10_LOSSLESS_DIR": str(lossless)}
    source = single_level_1()
    out = tmp_path / "views"
    run("training.views", "--model", str(source), "--out", str(out), "--data-dir", str(data), env=env)
    before = json.loads(source.with_suffix(".json").read_text())
    meta = json.loads((out / f"{before['name']}.json").read_text())
    name = before["members"][0]["name"]
    assert meta["test_time_augmentation"] == {name: 2} and meta["members"][0]["tta"] == 2
    # Both levels' int8 accuracy on the set the export chose the level on, for MODEL.md's table.
    key = "lossless_val_int8" if before["members"][0].get("tta_chosen_on") == "clean hold-out" else "val_int8"
    assert meta["members"][0]["tta_val_accuracy_int8"] == {"1": before["accuracy"][key], "2": meta["accuracy"][key]}
    row = tta([meta]).splitlines()[-1]  # MODEL.md's test-time table marks the int8 figure as such
    assert f"| {meta['accuracy'][key]:.2f}% (int8) | 6 views |" in row, row
    # Level 2 is six views against level 1's two: three times the arithmetic, the same weights.
    assert meta["parameters"] == before["parameters"]
    assert abs(meta["flops_per_image"] / before["flops_per_image"] - 3) < 0.01
    assert meta["accuracy"]["images"] == {"val": 4, "test": 60, "lossless_val": 4} and "calibration" not in meta
    assert meta["export_command"].startswith("python -m training.views --model")
    images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    served = load_model(out / f"{before['name']}.onnx", threads=1).raw(images)
    assert served.shape == (3, 10) and np.allclose(served.sum(1), 1, atol=1e-4)

    # A file already at level 2, and an ensemble, are refused by name.
    for refused in (out / before["name"], SHIPPED / "cifar10"):
        done = subprocess.run([sys.executable, "-m", "training.views", "--model", str(refused), "--out",
                               str(tmp_path / "no")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode != 0 and "only a single network at level 1" in done.stderr
