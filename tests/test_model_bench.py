"""The model level's PyTorch runtime on a fresh clone, where no training checkpoint exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.model_bench import runtimes_for, torch_predictor
from tests.conftest import REPO
from tests.images import sample_image


@pytest.mark.parametrize("name", ["cifar10", "vgg16_bn"])
def test_pytorch_eager_is_timed_on_the_same_architecture_without_checkpoints(name: str, tmp_path: Path) -> None:
    """Every member rebuilt untrained from the metadata: the parameter count export recorded for
    the served graph, and the served contract (uint8 NHWC in, probabilities out)."""
    meta = json.loads((REPO / "model" / f"{name}.json").read_text())
    meta["members"] = [{**m, "checkpoint": str(tmp_path / "absent.pt")} for m in meta["members"]]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(meta))
    path.with_suffix(".onnx").symlink_to(REPO / "model" / f"{name}.onnx")
    assert "PyTorch eager fp32" in [r.label for r in runtimes_for(path, tmp_path)]

    from training.export import rebuilt

    networks = [rebuilt(m["name"], m["recipe"]["model"]) for m in meta["members"]]
    assert sum(p.numel() for n in networks for p in n.parameters()) == meta["parameters"]
    images = np.stack([np.asarray(sample_image(label)) for label in ("cat", "ship")])
    probs = torch_predictor(path, 1)(images)
    assert probs.shape == (2, len(meta["classes"]))
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
