"""Hostile and broken uploads, made here by the hundred: valid files of every format and mode,
then each truncated, bit-flipped and with its header swapped. Every one must be answered by the
real app with 200 or a 4xx that names the problem; never a 5xx, never a message that shows an
object, a memory address or a path; and the service must go on serving."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_client
from tests.images import encode, odd_valid_images, sample, sample_image

LEAKS = re.compile(r"0x[0-9a-f]{4,}|<[^>]*object at|/(?:tmp|home|root|usr|work)/|\\.py\b", re.I)


def corpus(seed: int = 0) -> Iterator[tuple[str, bytes]]:

    rng = np.random.default_rng(seed)
    cat = sample_image("cat").resize((96, 72))
    valid = dict(odd_valid_images())
    for mode in ("L", "I", "F", "1", "I;16", "RGBA", "CMYK", "YCbCr", "P"):
        for fmt in ("PNG", "TIFF", "JPEG", "BMP", "WEBP", "GIF"):
            try:
                image = cat.convert(mode) if mode != "I;16" else cat.convert("I").convert("I;16")
                valid[f"{mode}.{fmt.lower()}"] = encode(image, fmt)
            except (OSError, ValueError, KeyError):
                continue  # a mode the format cannot hold
    valid["progressive.jpg"] = encode(cat, "JPEG", progressive=True, quality=60)
    valid["cat.jpg"] = sample("cat")
    for name, data in sorted(valid.items()):
        yield f"valid {name}", data
        for cut in sorted({3, 8, 16, len(data) // 3, len(data) // 2, len(data) - 5}):
            if 0 < cut < len(data):
                yield f"{name} truncated at {cut}", data[:cut]
        for flips in (1, 8, 64):
            broken = bytearray(data)
            for where in rng.integers(0, len(data), flips):
                broken[where] ^= 1 << int(rng.integers(0, 8))
            yield f"{name} with {flips} bit(s) flipped", bytes(broken)
        head = int(rng.integers(8, 40))
        yield f"{name} with a PNG header", b"\x89PNG\r\n\x1a\n" + data[8:]
        yield f"{name} with a JPEG header", b"\xff\xd8\xff" + data[3:]
        yield f"{name} with random bytes after {head}", data[:head] + rng.bytes(len(data) - head)


def test_the_corpus_is_large() -> None:
    assert sum(1 for _ in corpus()) > 300


@pytest.mark.slow
def test_no_upload_gets_a_5xx_or_a_leaky_message(model_dir: Path) -> None:
    answered: dict[int, int] = {}
    with make_client(model_dir) as client:
        for name, data in corpus():
            response = client.post("/api/v1/predict", files={"file": ("upload", data, "application/octet-stream")})
            answered[response.status_code] = answered.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{name}: {response.status_code} {response.text}"
            assert not LEAKS.search(response.text), f"{name}: {response.text}"
        assert (
            client.post("/api/v1/predict", files={"file": ("cat.jpg", sample("cat"), "image/jpeg")}).status_code == 200
        )
    assert answered.get(200, 0) > 50 and set(answered) <= {200, 413, 415, 422}
