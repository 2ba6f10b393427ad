"""Turn uploaded bytes into the model's input: one (size, size, 3) uint8 RGB array.

This is the only image-decoding path in the project. The service, the CLI, the int8
calibration and the training-side evaluation all call `decode_image`, so the shipped model
is measured on exactly the pixels it will be served.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The pixel check in decode_square is the only guard: Pillow's own (a warning past 89M pixels, an
# error past twice that, raised inside Image.open) would refuse in its words, not the service's,
# and catching its warning per call was not thread-safe.
Image.MAX_IMAGE_PIXELS = None

# Formats we decode, recognised by their leading bytes (never by the client's content type).
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
DEFAULT_MAX_PIXELS = 12_000_000  # per image, as decoded (settings.max_pixels)
# A JPEG is decoded at a reduced DCT scale, but only down to this many times the model's side:
# the final bicubic resize then still has pixels to average (anti-aliasing). Decoding straight
# to the model's size leaves it nothing to smooth and costs accuracy on real photos (MODEL.md).
DRAFT_FACTOR = 4
# A decode this small may run on the event loop (light_to_decode): a few milliseconds at most,
# whatever the format and content.
LIGHT_PIXELS = 256 * 256
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


class ImageError(ValueError):
    """An upload the service refuses; `status_code` is the HTTP status that fits it."""

    status_code = 422


class UnsupportedImageError(ImageError):
    status_code = 415


class CorruptImageError(ImageError):
    status_code = 422


class TooManyPixelsError(ImageError):
    status_code = 422


class DecoderBusyError(ImageError):
    """Every pixel of the decode budget is in use for longer than a decode may wait."""

    status_code = 503


def sniff_format(data: bytes) -> str | None:
    """The image format named by the file's magic bytes, or None if it is none we decode."""
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white, as a viewer shows it."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit integer or float greyscale, in float32 (not a float64 copy at full size):
        # 0..1 floats are taken as fractions of white, 0..255 as 8-bit values, anything above as
        # 16-bit; negative values and values past 65535 are clipped rather than wrapped.
        array = np.array(image, dtype=np.float32)  # a writable copy: scaled and clipped in place
        top = float(array.max(initial=0.0))
        scale = 255.0 if image.mode == "F" and top <= 1.0 else 1.0 if top <= 255 else 255.0 / 65535.0
        array *= scale
        np.clip(array, 0, 255, out=array)
        return Image.fromarray(array.round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _centre_square(image: Image.Image) -> Image.Image:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


class DecodeBudget:
    """Pixels being decoded at once, process-wide: a decode waits (up to `wait_s`) until the ones
    in flight leave room for it, so a flood of huge uploads queues instead of growing memory
    (Pillow holds about 4 bytes a pixel, several copies of it at the peak of a decode)."""

    def __init__(self, pixels: int, wait_s: float = 5.0):
        self.total, self.free, self.wait_s = pixels, pixels, wait_s
        self.room = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self.room:
            if not self.room.wait_for(lambda: self.free >= pixels, timeout=self.wait_s):
                raise DecoderBusyError("The service is decoding other large images; retry in a moment.")
            self.free -= pixels
        try:
            yield
        finally:
            with self.room:
                self.free += pixels
                self.room.notify_all()


# One budget for the process; its size is the per-image limit (settings.max_pixels) unless
# configured (settings.decode_budget_pixels, applied by the app at start).
BUDGET = DecodeBudget(DEFAULT_MAX_PIXELS)


def _drafted(image: Image.Image, kind: str, min_side: int) -> int:
    """For a JPEG, ask the decoder for the smallest DCT scale (1/2 to 1/8) whose centre square
    still has `min_side` pixels a side (0: full size); the pixels the decode will then make."""
    width, height = image.size
    if kind == "JPEG" and min_side:
        side = min(width, height)
        image.draft(None, (max(1, width * min_side // side), max(1, height * min_side // side)))
    return image.size[0] * image.size[1]


def light_to_decode(data: bytes, size: int) -> bool:
    """Whether the file's header promises a decode of at most LIGHT_PIXELS, for the model's input
    `size`: cheap enough to run on the event loop. A header that cannot be read answers False:
    its refusal is made where decoding normally happens."""
    kind = sniff_format(data)
    if kind is None:
        return False
    try:
        return _drafted(Image.open(io.BytesIO(data), formats=[kind]), kind, size * DRAFT_FACTOR) <= LIGHT_PIXELS
    except Exception:
        return False


def decode_square(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 0) -> Image.Image:
    """Decode an image file's bytes to the RGB centre square the model looks at.

    Steps: sniff the format; for a JPEG ask the decoder for the smallest DCT scale (1/2 to 1/8)
    whose centre square still has `min_side` pixels a side (0: full size), which costs a fraction
    of the memory and time; refuse from the header more than `max_pixels` to decode; hold that
    many pixels of the process-wide decode budget while decoding; first frame of an animation,
    EXIF orientation, any mode to RGB, centre-crop to a square. Raises an ImageError subclass that
    names what is wrong.
    """
    if not data:
        raise CorruptImageError("The uploaded file is empty (0 bytes); send an image file.")
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedImageError(
            "The file is not an image format we decode; send one of: " + ", ".join(SUPPORTED_FORMATS) + "."
        )
    try:
        image = Image.open(io.BytesIO(data), formats=[kind])
        width, height = image.size
        decoded = _drafted(image, kind, min_side)
        if decoded > max_pixels:
            raise TooManyPixelsError(f"The image has {width}x{height} pixels; the limit is {max_pixels:,} pixels.")
        with BUDGET.hold(min(decoded, BUDGET.total)):
            image.seek(0)
            image.load()
            image = _centre_square(_to_rgb(ImageOps.exif_transpose(image)))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise CorruptImageError(f"The file starts like a {kind} file but its header cannot be read.") from None
    except Exception:
        # Any decoder failure is this file's fault, never a 500. Pillow's own messages can name
        # objects, addresses or paths: not echoed to clients.
        raise CorruptImageError(f"The {kind} file is corrupt or truncated and cannot be decoded.") from None
    if image.size[0] < 1 or image.size[1] < 1:
        raise CorruptImageError("The image has no pixels.")
    return image


def to_model_input(square: Image.Image, size: int = 32) -> np.ndarray:
    """The centre square as the model's (size, size, 3) uint8 input: bicubic resize with
    antialiasing (Pillow's BICUBIC with reducing support)."""
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.uint8).copy()


def decode_image(data: bytes, size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes to a (size, size, 3) uint8 RGB array (`decode_square`,
    then `to_model_input`)."""
    return to_model_input(decode_square(data, max_pixels, min_side=size * DRAFT_FACTOR), size)
