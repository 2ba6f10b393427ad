"""How int8 models run: fused integer kernels only when a self-check at load shows they compute
what the reference (dequantise -> float -> quantise) kernels compute; forced by the setting."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cifar_onnx import registry
from tests.conftest import SHIPPED

INT8 = sorted(SHIPPED.glob("*.onnx"))


@pytest.mark.parametrize("path", INT8, ids=lambda p: p.stem)
def test_every_shipped_model_passes_its_self_check_here(path: Path) -> None:
    """The shipped graphs carry 7-bit weights (or run on a CPU whose kernels do not saturate):
    fused kernels must agree with the reference ones on this machine."""
    session, mode = registry.make_session(path, threads=1)
    assert mode.startswith("int8 fused (self-check"), mode
    images = registry.self_check_images(32)
    assert session.run(None, {"image": images})[0].shape == (8, 10)


def test_self_check_images_are_the_same_everywhere() -> None:
    images = registry.self_check_images(32)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, registry.self_check_images(32))
    assert images.min() == 0 and images.max() == 255, "the full range of activations is driven"


class Disagreeing:
    """A fused session whose answers are off, as saturating kernels' are: every image's
    probabilities rolled by one class."""

    def __init__(self, real: object):
        self.real = real

    def get_inputs(self) -> list:
        return self.real.get_inputs()

    def run(self, names: object, feed: dict, options: object = None) -> list[np.ndarray]:
        return [np.roll(self.real.run(names, feed, options)[0], 1, axis=1)]


def test_a_model_whose_fused_kernels_disagree_is_served_unfused(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    real = registry._session

    def session(path: Path, threads: int, fused: bool) -> object:
        made = real(path, threads, fused)
        return Disagreeing(made) if fused else made

    monkeypatch.setattr(registry, "_session", session)
    with caplog.at_level(logging.WARNING, logger="cifar_onnx"):
        model = registry.load_model(SHIPPED / "airbench.onnx", threads=1)
    assert model.int8_mode.startswith("int8 unfused (self-check"), model.int8_mode
    assert any("serving it unfused" in r.getMessage() and "airbench.onnx" in r.getMessage() for r in caplog.records)
    assert not isinstance(model.session, Disagreeing)
    # Forcing still forces: on takes the fused session whatever it computes.
    assert registry.make_session(SHIPPED / "airbench.onnx", 1, "on")[1] == "int8 fused (forced)"
    assert registry.make_session(SHIPPED / "airbench.onnx", 1, "off")[1] == "int8 unfused (forced)"


def test_an_unknown_fusion_setting_is_refused() -> None:
    with pytest.raises(registry.ModelError, match="auto, on or off"):
        registry.make_session(SHIPPED / "airbench.onnx", 1, "sometimes")


def test_fusion_check_measures_the_served_kernels_against_the_reference(tmp_path: Path) -> None:
    """training.fusion_check (the fused kernels' accuracy check, run per CPU): with labels that are the
    reference kernels' own answers, accuracy as served is exactly the agreement between the two."""
    from tests.tiny_model import write_qdq_conv_model
    from training import fusion_check

    path = write_qdq_conv_model(tmp_path, "conv7", 63)
    images = registry.self_check_images(32)
    labels = registry.make_session(path, 1, "off")[0].run(None, {"image": images})[0].argmax(1)
    result = fusion_check.check(path, images, labels, threads=1)
    assert result["mode"].startswith("int8 fused (self-check"), result
    assert result["unfused"] == 100.0
    assert result["served"] == result["same"] == 100.0, "7-bit fused kernels give the reference answers"
    shuffled = fusion_check.check(path, images, np.roll(labels, 1), threads=1)
    assert shuffled["served"] == shuffled["unfused"] < 100.0 and shuffled["same"] == 100.0
