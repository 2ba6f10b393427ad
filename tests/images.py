"""Image files made at test time: odd-but-valid ones the service must accept, bad ones it must refuse."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

SAMPLES = Path(__file__).parent / "data" / "cifar"  # the first test image of each class


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def sample(label: str) -> bytes:
    return (SAMPLES / f"{label}.jpg").read_bytes()


def sample_image(label: str) -> Image.Image:
    return Image.open(SAMPLES / f"{label}.jpg").convert("RGB")


def exif_rotated_jpeg() -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view):
    stored 40 wide x 20 high, left half red, right half blue; viewed, red is on top."""
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif() -> bytes:
    """Two frames: green then red. The first frame is the one classified."""
    frames = [Image.new("RGB", (32, 32), (0, 255, 0)), Image.new("RGB", (32, 32), (255, 0, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_claiming_huge_size(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def odd_valid_images() -> dict[str, bytes]:
    """Valid uploads in every mode and shape the preprocessing has a branch for."""
    cat = sample_image("cat")
    big_cat = cat.resize((256, 256))
    rgba = big_cat.convert("RGBA")
    rgba.putalpha(128)
    greyscale16 = Image.new("I;16", (64, 64))
    greyscale16.putdata([(x * 1000) % 65536 for x in range(64 * 64)])
    return {
        "rgb.png": encode(big_cat, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "palette.png": encode(big_cat.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "palette-transparent.gif": encode(big_cat.convert("P"), "GIF", transparency=0),
        "greyscale.jpg": encode(big_cat.convert("L"), "JPEG"),
        "la.png": encode(big_cat.convert("LA"), "PNG"),
        "grey16.png": encode(greyscale16, "PNG"),
        "cmyk.jpg": encode(big_cat.convert("CMYK"), "JPEG"),
        "animated.gif": animated_gif(),
        "exif-rotated.jpg": exif_rotated_jpeg(),
        "tiny-1x1.png": encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "very-wide.png": encode(Image.new("RGB", (4000, 12), (90, 90, 200)), "PNG"),
        "image.webp": encode(big_cat, "WEBP"),
        "image.bmp": encode(big_cat, "BMP"),
        "image.tiff": encode(big_cat, "TIFF"),
    }


def bad_uploads() -> dict[str, tuple[bytes, int, str]]:
    """name -> (bytes, expected status, expected error code)."""
    jpeg, png = sample("cat"), encode(sample_image("cat").resize((64, 64)), "PNG")
    return {
        "empty.jpg": (b"", 422, "corrupt_image"),
        "text.txt": (b"just some words, not an image\n", 415, "unsupported_media_type"),
        "page.html": (b"<!doctype html><html><body>hi</body></html>", 415, "unsupported_media_type"),
        "drawing.svg": (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
            415,
            "unsupported_media_type",
        ),
        "doc.pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", 415, "unsupported_media_type"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], 422, "corrupt_image"),
        "truncated.png": (png[: len(png) // 2], 422, "corrupt_image"),
        "header-only.png": (png[:40], 422, "corrupt_image"),
        "huge-claim.png": (png_claiming_huge_size(), 422, "too_many_pixels"),
        "random.bin": (bytes(range(256)) * 8, 415, "unsupported_media_type"),
    }
