"""Knowledge distillation (training.distill) and the cycle sizing of training.train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tiny_model import write_tiny_model

torch = pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")
F = torch.nn.functional

from training import distill  # noqa: E402
from training.train import compose_recipe, epochs_for  # noqa: E402


def test_loss_is_cross_entropy_without_distillation() -> None:
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    teacher = torch.full((8, 10), 0.1)
    assert torch.allclose(distill.distillation_loss(logits, labels, teacher, 0.0, 4.0), F.cross_entropy(logits, labels))


def test_soft_term_vanishes_when_the_student_agrees_with_the_teacher() -> None:
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    agreeing = distill.distillation_loss(logits, labels, logits.softmax(1), 1.0, 2.0)
    assert agreeing.abs().item() < 1e-5
    disagreeing = distill.distillation_loss(logits, labels, (-logits).softmax(1), 1.0, 2.0)
    assert disagreeing.item() > 0.1


def test_one_step_moves_the_student_towards_the_teacher() -> None:
    torch.manual_seed(0)
    student = torch.nn.Linear(5, 10)
    x, labels = torch.randn(32, 5), torch.randint(0, 10, (32,))
    teacher = torch.randn(32, 10).mul(3).softmax(1)

    def kl() -> float:
        with torch.no_grad():
            return F.kl_div(student(x).log_softmax(1), teacher.log(), log_target=True, reduction="batchmean").item()

    before = kl()
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    loss = distill.distillation_loss(student(x), labels, teacher, alpha=1.0, temperature=1.0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert kl() < before


def test_teacher_answers_are_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIFAR_ONNX_CACHE", str(tmp_path / "cache"))
    teacher = write_tiny_model(tmp_path / "models", "teacher")
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    first = distill.teacher_probs([teacher], images, threads=1)
    assert first.shape == (40, 10) and np.allclose(first.sum(1), 1, atol=1e-5)
    assert len(list((tmp_path / "cache" / "teachers").glob("*.npy"))) == 1

    import training.export

    def no_session(*_: object, **__: object) -> None:
        raise AssertionError("the cached answers should have been used")

    monkeypatch.setattr(training.export, "session", no_session)
    assert np.array_equal(distill.teacher_probs([teacher], images, threads=1), first)
    with pytest.raises(AssertionError, match="cached"):  # other images: a new key, computed again
        distill.teacher_probs([teacher], images[:20], threads=1)


def test_cycle_sizing_counts_training_and_evaluation() -> None:
    # 45,000 images at 300/s (150 s) + 15,000 evaluated at 750/s (20 s) = 170 s an epoch.
    assert epochs_for(60, 45_000, 15_000, (300.0, 750.0)) == 21
    assert epochs_for(0.1, 45_000, 15_000, (300.0, 750.0)) == 1  # never zero: a schedule needs one epoch


def test_a_recipe_records_distillation_only_when_a_teacher_is_given() -> None:
    plain = compose_recipe("airbench", {}, None, distilled=False)
    assert "distill_alpha" not in plain  # the recipe tables then say "none"
    taught = compose_recipe("airbench", {"distill_temperature": 4.0}, 50, distilled=True)
    assert (taught["distill_alpha"], taught["distill_temperature"], taught["epochs"]) == (0.5, 4.0, 50)
    assert compose_recipe("vgg16_bn", {}, None, distilled=False)["epochs"] == 60
