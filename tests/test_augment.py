"""The photo-like augmentations: what each does to a batch, and that an option left off changes
nothing (the same batches, the same random draws) for the recipes already trained."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the training extra is not installed (pip install .[train])")

from training.augment import augment, blur_or_sharpen, colour_jitter, cutmix, random_resized_crop  # noqa: E402

RECIPE = {"flip": "random", "translate": 4, "cutout": 0}


def batch(n: int = 16) -> torch.Tensor:
    ramp = torch.linspace(0, 1, 32)
    x = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32), 0.5 * torch.ones(32, 32)])
    return (x[None] * torch.rand(n, 1, 1, 1, generator=torch.Generator().manual_seed(1)) + 0.1).clamp(0, 1)


def test_options_left_off_draw_nothing_and_change_nothing() -> None:
    x, gen = batch(), torch.Generator().manual_seed(0)
    before = gen.get_state()
    assert torch.equal(colour_jitter(x, 0, gen), x) and torch.equal(blur_or_sharpen(x, 0, gen), x)
    assert torch.equal(gen.get_state(), before)
    off = {**RECIPE, "crop_scale": 0, "colour": 0, "blur": 0}
    a = augment(x, torch.arange(len(x)), 0, off, 0, torch.Generator().manual_seed(5))
    b = augment(x, torch.arange(len(x)), 0, RECIPE, 0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert cutmix(x, 0, gen)[1] is None and torch.equal(gen.get_state(), before)


def test_cutmix_pastes_one_box_from_a_partner_and_says_how_much_is_left() -> None:
    x = torch.arange(8.0)[:, None, None, None].expand(8, 3, 32, 32).clone()  # image i is all i
    mixed, partner, own = cutmix(x, 1.0, torch.Generator().manual_seed(3))
    assert partner is not None and sorted(partner.tolist()) == list(range(8))
    for i in range(8):
        kept = (mixed[i, 0] == i).float().mean().item()
        if partner[i] != i:
            assert kept == pytest.approx(own), "the share left is the image's own pixels"
            assert ((mixed[i, 0] == i) | (mixed[i, 0] == partner[i])).all()
    assert 0 <= own < 1 and torch.equal(x, torch.arange(8.0)[:, None, None, None].expand(8, 3, 32, 32))
    shares = [cutmix(x, 1.0, torch.Generator().manual_seed(s))[2] for s in range(50)]
    assert 0.3 < sum(shares) / len(shares) < 0.8, "box areas spread over the range"
    applied = [cutmix(x, 0.5, torch.Generator().manual_seed(s))[1] is not None for s in range(200)]
    assert 70 < sum(applied) < 130, "applied to about half the batches"


def test_resized_crops_zoom_in_and_keep_the_shape() -> None:
    x = batch()
    whole = random_resized_crop(x, 1.0, torch.Generator().manual_seed(0))
    assert whole.shape == x.shape and (whole - x).abs().max() < 0.1, "scale 1 is (almost) the image itself"
    zoomed = random_resized_crop(x, 0.25, torch.Generator().manual_seed(0))
    # A ramp seen through a smaller window spans less of its range.
    span = lambda t: (t[:, 0].amax(dim=(1, 2)) - t[:, 0].amin(dim=(1, 2))).mean()  # noqa: E731
    assert span(zoomed) < 0.9 * span(x)


def test_colour_and_blur_stay_in_range_and_do_what_they_say() -> None:
    x = batch()
    jittered = colour_jitter(x, 0.4, torch.Generator().manual_seed(0))
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, x)
    stripes = torch.full((1, 3, 32, 32), 0.25)
    stripes[..., ::2] = 0.75  # all high frequency, with room to sharpen before clipping
    g = torch.Generator().manual_seed(0)
    outs = [blur_or_sharpen(stripes, 1.0, g) for _ in range(40)]
    contrast = [o.std().item() for o in outs]
    assert min(contrast) < 0.9 * stripes.std().item() and max(contrast) > 1.1 * stripes.std().item(), (
        "blurs and sharpens"
    )
    assert all(o.min() >= 0 and o.max() <= 1 for o in outs)


def test_a_recipe_with_every_option_augments_a_batch_reproducibly() -> None:
    recipe = {**RECIPE, "crop_scale": 0.35, "colour": 0.3, "blur": 0.8, "cutout": 8}
    x = batch()
    a = augment(x, torch.arange(len(x)), 2, recipe, 0, torch.Generator().manual_seed(9))
    b = augment(x, torch.arange(len(x)), 2, recipe, 0, torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
