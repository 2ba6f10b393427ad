"""The clean hold-out, the statistics fitted from data, and the rule that picks the default.

The hold-out is tested on an image folder made here (and on the real one when this machine
has it); the rule on synthetic answers, where the right choice is known.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import dataset_dir
from training import data as cifar

pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")
from training import choose

PER_CLASS = 6


def _png(path: Path, value: int) -> None:
    Image.new("RGB", (32, 32), (value, value, value)).save(path)


def synthetic_folder(root: Path) -> tuple[Path, Path, list[tuple[int, str, str]]]:
    """An image folder whose pixel value names each image (class * 20 + rank), and a lossless
    folder holding four of its training images, as index.csv names them."""
    for part in ("train", "test"):
        for c, name in enumerate(cifar.CLASSES):
            (root / "cifar" / part / name).mkdir(parents=True)
            for i in range(PER_CLASS):
                _png(root / "cifar" / part / name / f"{i:04d}.jpg", c * 20 + i)
    lossless = root / "lossless"
    lossless.mkdir()
    picked = [(0, "frog", "train/frog/0003.jpg"), (1, "truck", "train/truck/0000.jpg"),
              (2, "airplane", "train/airplane/0005.jpg"), (3, "cat", "train/cat/0001.jpg")]  # fmt: skip
    with open(lossless / "index.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "class", "jpeg_copy"])
        for index, name, copy in picked:
            writer.writerow([index, name, copy])
            rank = int(Path(copy).stem)
            _png(lossless / f"{index:05d}_{name}.png", cifar.CLASSES.index(name) * 20 + rank)
    return root / "cifar", lossless, picked


@pytest.mark.parametrize("layout", ["split", "full"])
def test_the_hold_out_leaves_training_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    monkeypatch.setenv("CIFAR_ONNX_CACHE", str(tmp_path / "cache"))
    folder, lossless, picked = synthetic_folder(tmp_path)
    data = cifar.load_cifar10(folder, lossless=lossless, layout=layout)
    held = {cifar.CLASSES.index(name) * 20 + int(Path(copy).stem) for _, name, copy in picked}
    train_values = set(data.train.images[:, 0, 0, 0].tolist())
    assert not held & train_values, "a held-out image's JPEG copy is still in training"
    assert set(data.lossless.jpeg.images[:, 0, 0, 0].tolist()) == held
    assert np.array_equal(data.lossless.clean.images, data.lossless.jpeg.images)  # PNGs made lossless here
    assert [cifar.CLASSES[y] for y in data.lossless.clean.labels] == [name for _, name, _ in picked]
    everything = 10 * PER_CLASS
    if layout == "full":
        assert len(train_values) == len(data.train.labels) == everything - len(picked)
        assert np.array_equal(data.val.images, data.lossless.jpeg.images)
    else:
        val_values = set(data.val.images[:, 0, 0, 0].tolist())
        assert len(data.train.labels) == everything - len(val_values) - len(held - val_values)


def test_a_wrong_index_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIFAR_ONNX_CACHE", str(tmp_path / "cache"))
    folder, lossless, _ = synthetic_folder(tmp_path)
    text = (lossless / "index.csv").read_text().replace("0,frog,", "0,deer,")
    (lossless / "index.csv").write_text(text)
    with pytest.raises((ValueError, FileNotFoundError)):
        cifar.load_cifar10(folder, lossless=lossless)


def test_a_hold_out_of_another_folder_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full hold-out given with a small image folder: a clear error, not an index out of range."""
    monkeypatch.setenv("CIFAR_ONNX_CACHE", str(tmp_path / "cache"))
    folder, lossless, _ = synthetic_folder(tmp_path)
    text = (lossless / "index.csv").read_text().replace("train/truck/0000.jpg", f"train/truck/{PER_CLASS:04d}.jpg")
    (lossless / "index.csv").write_text(text)
    with pytest.raises(ValueError, match="does not have"):
        cifar.load_cifar10(folder, lossless=lossless)


@pytest.mark.dataset
def test_the_real_hold_out_is_the_2000_jpeg_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    root = dataset_dir()
    clean = root.parent / cifar.LOSSLESS_FOLDER if root else None
    if not clean or not (clean / "index.csv").is_file():
        pytest.skip("no CIFAR-10 folder with the lossless hold-out beside it")
    data = cifar.load_cifar10(root, lossless=clean, layout="full")
    assert len(np.unique(data.lossless.rows)) == cifar.LOSSLESS_COUNT
    assert len(data.train.labels) == 50_000 - cifar.LOSSLESS_COUNT
    # Each PNG against its JPEG copy: JPEG q75's error (about 5.8/255), never another image's.
    diff = np.abs(data.lossless.clean.images.astype(np.int16) - data.lossless.jpeg.images).mean(axis=(1, 2, 3))
    assert diff.max() < 20 and 3 < diff.mean() < 9


def test_statistics_are_fitted_on_every_class() -> None:
    from training.batches import random_images

    labels = np.repeat(np.arange(10), 500)  # an image folder's order: sorted by class
    images = labels.astype(np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    picked = random_images(images, 500, seed=0)[:, 0, 0, 0]
    assert set(picked.tolist()) == set(range(10)), "the first N of a class-sorted array is one class"
    assert np.bincount(picked, minlength=10).min() > 25


def test_airbench_whitening_sees_every_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from training import train as train_module
    from training.models import AirbenchNet

    labels = np.repeat(np.arange(10), 1000)  # class-sorted, more than the 5,000 whitening images
    images = np.repeat((labels * 20).astype(np.uint8), 32 * 32 * 3).reshape(-1, 32, 32, 3)
    split = cifar.Split(images, labels)
    fake = cifar.Cifar10(train=split, val=cifar.Split(images[::50], labels[::50]), test=split, source="made here")
    monkeypatch.setattr(train_module, "load_cifar10", lambda *args, **kwargs: fake)
    seen: list[torch.Tensor] = []

    class Fitted(Exception):
        """Stops the run once the whitening has been fitted: the test needs nothing more."""

    def record(self: AirbenchNet, x: torch.Tensor, eps: float = 5e-4) -> None:
        seen.append(x)
        raise Fitted

    monkeypatch.setattr(AirbenchNet, "init_whitening", record)
    with pytest.raises(Fitted):
        train_module.main(["--model", "airbench", "--data-dir", "unused", "--out", str(tmp_path), "--epochs", "1",
                           "--threads", "1", "--precision", "fp32"])  # fmt: skip
    classes = set(np.round(seen[0][:, 0, 0, 0].numpy() * 255 / 20).astype(int).tolist())
    assert classes == set(range(10))


# ---------------------------------------------------------------------------------------------
# The rule.
# ---------------------------------------------------------------------------------------------


def answers(
    clean_right: int, jpeg_right: int, n_clean: int = 2000, n_jpeg: int = 5000, shift: int = 0
) -> choose.Answers:
    """Right on the first `clean_right` clean images and the first `jpeg_right` JPEG ones
    (rotated by `shift`, so that two candidates' mistakes fall on different images)."""
    clean = np.roll(np.arange(n_clean) < clean_right, shift)
    jpeg = np.roll(np.arange(n_jpeg) < jpeg_right, shift)
    return choose.Answers(clean=clean, jpeg=jpeg)


def test_mcnemar_matches_known_values() -> None:
    a = np.array([True] * 10 + [False] * 2)
    b = np.array([False] * 10 + [True] * 2)
    assert choose.mcnemar_p(a, b) == pytest.approx(0.0386, abs=1e-4)  # 10 vs 2 discordant: 2 * P(X <= 2)
    assert choose.mcnemar_p(a, a) == 1.0
    assert choose.smallest_significant(20) == 10  # 15 vs 5: p 0.041; 14 vs 6: p 0.115


def test_best_on_clean_images_wins_when_jpeg_differences_are_noise() -> None:
    picks = {"clean-best": answers(1900, 4700), "jpeg-best": answers(1880, 4705, shift=7)}
    assert choose.choose(picks) == "clean-best"


def test_a_jpeg_loss_beyond_noise_overrules() -> None:
    picks = {"clean-best": answers(1900, 4500), "jpeg-best": answers(1899, 4700, shift=3)}
    assert choose.choose(picks) == "jpeg-best"


def test_a_new_model_ships_only_without_a_clean_loss_beyond_noise() -> None:
    incumbent = answers(1900, 4700)
    assert choose.may_replace(answers(1895, 4800, shift=5), incumbent)  # 5 images fewer: noise
    assert not choose.may_replace(answers(1850, 4800, shift=5), incumbent)  # 50 fewer: a real loss


def test_the_latency_guard_passes_over_a_candidate_too_slow_to_serve() -> None:
    picks = {"pair": answers(1880, 4700), "trio": answers(1900, 4710, shift=3)}
    assert choose.choose(picks) == "trio"
    assert choose.choose_within(picks, {"pair": 4.1, "trio": 7.0}, bound_ms=4.7) == "pair"
    # a faster candidate that loses on JPEG validation beyond noise is still vetoed by a fast one
    picks["fast-but-jpeg-worse"] = answers(1950, 4400, shift=9)
    assert choose.choose_within(picks, {"pair": 4.1, "trio": 7.0, "fast-but-jpeg-worse": 2.0}, 4.7) == "pair"
    assert choose.choose_within(picks, {"pair": 5.0, "trio": 7.0, "fast-but-jpeg-worse": 6.0}, 4.7) is None


def test_latency_is_timed_as_served_for_a_file_and_an_average(tmp_path: Path) -> None:
    from tests.tiny_model import write_tiny_model

    a, b = (write_tiny_model(tmp_path, name).with_suffix("") for name in ("a", "b"))
    latency = choose.served_latency_ms({"a": (a,), "a + b": (a, b)}, rounds=1, calls=5)
    assert set(latency) == {"a", "a + b"}
    assert all(0 < ms < 1000 for ms in latency.values())


@pytest.mark.slow
def test_the_augmentation_study_trains_each_variant_and_judges_it_on_clean_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training import study

    monkeypatch.setenv("CIFAR_ONNX_CACHE", str(tmp_path / "cache"))
    folder, lossless, picked = synthetic_folder(tmp_path)
    study.main(["--model", "airbench", "--epochs", "1", "--threads", "1", "--data-dir", str(folder),
                "--lossless-dir", str(lossless), "--variant", "base={}",
                "--variant", 'photo={"crop_scale": 0.5, "colour": 0.3, "blur": 0.5, "cutmix": 1.0}',
                "--record", str(tmp_path / "studies" / "photo.json")])  # fmt: skip
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[0].startswith("| variant |") and f"clean hold-out ({len(picked)})" in table[0]
    assert table[1].startswith("| base |") and table[2].startswith("| photo |") and "images, p = " in table[2]
    recorded = (tmp_path / "cache" / "runs" / "study-airbench-photo" / "run.json").read_text()
    assert '"crop_scale": 0.5' in recorded and '"cutmix": 1.0' in recorded
    from training.tables import study_table

    kept = json.loads((tmp_path / "studies" / "photo.json").read_text())
    assert [v["name"] for v in kept["variants"]] == ["base", "photo"] and kept["clean_images"] == len(picked)
    assert study_table(kept).splitlines()[2:] == table[1:], "the documents' table renders what was printed"


def test_a_latency_reference_is_timed_beside_the_candidates_and_sets_the_bound(tmp_path: Path) -> None:
    from tests.tiny_model import write_tiny_model

    a, ref = (write_tiny_model(tmp_path, name).with_suffix("") for name in ("a", "ref"))
    bound, latency = choose.latency_guard({"a": (a,), "a + ref": (a, ref)}, ref, None)
    assert latency is not None and set(latency) == {"a", "a + ref"}  # the reference is no candidate
    assert bound is not None and 0 < bound < 1000
    assert choose.latency_guard({"a": (a,)}, None, None) == (None, None)
    assert choose.latency_guard({"a": (a,)}, None, 4.7)[0] == 4.7


def test_the_bound_can_be_a_fraction_of_the_reference(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The speed target is half of the 2026-11-24 default: --latency-fraction 0.5 scales the
    reference's time measured in the same rounds, and the reference stays out of the candidates."""
    monkeypatch.setattr(choose, "served_latency_ms", lambda groups: {name: 6.0 if name == choose.REFERENCE else 3.2
                                                                     for name in groups})  # fmt: skip
    bound, latency = choose.latency_guard({"a": (Path("a"),)}, Path("ref"), None, 0.5)
    assert (bound, latency) == (3.0, {"a": 3.2})
    assert choose.over_bound(latency, bound) == {"a"}

    with pytest.raises(SystemExit):  # a fraction of nothing: refused before any work
        choose.main(["--candidate", "model/cifar10", "--latency-fraction", "0.5", "--data-dir", "/nonexistent"])
    assert "--latency-fraction scales the time of --latency-reference" in capsys.readouterr().err
