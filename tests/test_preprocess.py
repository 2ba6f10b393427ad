"""decode_image: every odd-but-valid upload becomes a (32, 32, 3) uint8 RGB array; bad ones are
refused with the right error class."""

from __future__ import annotations

import numpy as np
import pytest

from cifar_onnx.preprocess import (
    LIGHT_PIXELS,
    CorruptImageError,
    ImageError,
    TooManyPixelsError,
    UnsupportedImageError,
    decode_image,
    light_to_decode,
    sniff_format,
)
from tests.images import animated_gif, bad_uploads, encode, exif_rotated_jpeg, odd_valid_images, sample, sample_image

ERRORS = {415: UnsupportedImageError, 422: (CorruptImageError, TooManyPixelsError)}


# The uniform ones and their colour; every other odd image is a photo (the cat, or its pieces).
UNIFORM = {"tiny-1x1.png": (10, 200, 30), "very-wide.png": (90, 90, 200)}


@pytest.mark.parametrize("name", sorted(odd_valid_images()))
def test_odd_valid_images_decode_to_rgb_32(name: str) -> None:
    array = decode_image(odd_valid_images()[name])
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    if name in UNIFORM:
        assert (array == UNIFORM[name]).all(), "one colour in, the same colour out"
    else:
        assert array.std() > 10, "a photo decoded to a flat image"


@pytest.mark.parametrize("name", sorted(bad_uploads()))
def test_bad_uploads_are_refused_with_their_reason(name: str) -> None:
    data, status, _code = bad_uploads()[name]
    with pytest.raises(ImageError) as raised:
        decode_image(data, max_pixels=40_000_000)
    assert raised.value.status_code == status
    assert isinstance(raised.value, ERRORS[status])


def test_a_32px_image_passes_through_unchanged() -> None:
    """CIFAR images are already 32x32: decoding must not resample them (training parity)."""
    import io

    from PIL import Image

    expected = np.asarray(Image.open(io.BytesIO(sample("dog"))).convert("RGB"))
    assert np.array_equal(decode_image(sample("dog")), expected)


def test_exif_orientation_is_applied() -> None:
    array = decode_image(exif_rotated_jpeg()).astype(int)
    top, bottom = array[:8].mean(axis=(0, 1)), array[-8:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60, "viewed upright, the red half is on top"
    assert bottom[2] > 200 and bottom[0] < 60


def test_transparency_is_composited_on_white() -> None:
    from PIL import Image

    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert decode_image(encode(clear, "PNG")).min() == 255


def test_animation_uses_the_first_frame() -> None:
    array = decode_image(animated_gif()).astype(int)
    assert array[..., 1].mean() > 200 and array[..., 0].mean() < 50  # green, not red


def test_sixteen_bit_greyscale_keeps_its_range() -> None:
    """I;16 values up to 65535 are scaled to 0..255, not clipped to white."""
    array = decode_image(odd_valid_images()["grey16.png"])
    assert 20 < array.mean() < 235 and array.std() > 10


def test_centre_square_crop_keeps_the_middle() -> None:
    from PIL import Image

    wide = Image.new("RGB", (300, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (100, 0, 200, 100))  # the centre square is blue
    array = decode_image(encode(wide, "PNG")).astype(int)
    assert array[..., 2].mean() > 240 and array[..., 0].mean() < 15


def test_pixel_limit_is_checked_before_decoding() -> None:
    big = encode(sample_image("cat").resize((400, 400)), "PNG")
    with pytest.raises(TooManyPixelsError, match="400x400 pixels; the limit is 100,000"):
        decode_image(big, max_pixels=100_000)


def test_light_to_decode_reads_the_pixels_from_the_header() -> None:
    """What may be decoded on the event loop: judged by the pixels the decode will make (a JPEG
    after its DCT scaling), never by the file's size; unreadable files go where refusals are made."""
    cat = sample_image("cat")
    assert light_to_decode(encode(cat, "PNG"), 32)
    flat = encode(cat.resize((300, 300)).convert("L").point(lambda _: 128), "PNG")  # small file, many pixels
    assert len(flat) < 2_000 and LIGHT_PIXELS < 300 * 300 and not light_to_decode(flat, 32)
    photo = encode(cat.resize((1000, 1000)), "JPEG")  # decoded at 1/4 scale: 250x250
    assert light_to_decode(photo, 32) and not light_to_decode(photo, 160)
    assert not light_to_decode(b"\x89PNG\r\n\x1a\n broken", 32) and not light_to_decode(b"<svg", 32)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"\xff\xd8\xff\xe0", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF89a", "GIF"),
     (b"RIFF\x00\x00\x00\x00WEBP", "WEBP"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"<svg", None), (b"", None)],
)  # fmt: skip
def test_format_is_sniffed_from_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


def test_training_reads_the_pixels_the_service_serves(tmp_path) -> None:
    """Preprocessing parity: training's data loader and the service give the same tensor."""
    from training.data import CLASSES, _read_folder

    for name in CLASSES:
        (tmp_path / "test" / name).mkdir(parents=True)
        (tmp_path / "test" / name / "0000.jpg").write_bytes(sample(name))
    split = _read_folder(tmp_path, "test")
    served = np.stack([decode_image(sample(name)) for name in CLASSES])
    assert np.array_equal(split.images, served) and split.labels.tolist() == list(range(10))


def _photo(width: int = 800, height: int = 600) -> bytes:
    """A photo-sized JPEG with detail finer than the model's 32 px grid: what aliasing would show."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = np.asarray(sample_image("cat").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    texture = rng.normal(0, 40, (height, width, 1)).astype(np.float32)
    stripes = 60 * np.sin(np.arange(width, dtype=np.float32) * 1.3)[None, :, None]
    pixels = np.clip(base + texture + stripes, 0, 255).astype(np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=92)


def _full_decode(data: bytes, size: int = 32) -> np.ndarray:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)


def test_a_large_photo_matches_a_full_decode_and_resize() -> None:
    """JPEGs are decoded at a reduced scale for speed and memory, but never so far down that the
    final resize loses its anti-aliasing: straight to 32 px (DCT scale 1/8 here) the input was
    several levels off a full decode."""
    photo = _photo()
    served = decode_image(photo).astype(np.int16)
    assert np.abs(served - _full_decode(photo)).mean() < 1.5


def test_float_images_in_zero_to_one_are_not_black() -> None:
    from PIL import Image

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    array = decode_image(encode(Image.fromarray(ramp, mode="F"), "TIFF")).astype(int)
    assert 100 < array.mean() < 155 and array.max() > 200


def test_32_bit_values_past_16_bits_are_clipped_not_wrapped() -> None:
    from PIL import Image

    values = np.full((40, 40), 70_000, dtype=np.int32)
    values[:, :20] = 0
    array = decode_image(encode(Image.fromarray(values, mode="I"), "TIFF")).astype(int)
    assert array[:, :14].max() == 0 and array[:, 18:].min() == 255  # white, not 70000 mod 65536
