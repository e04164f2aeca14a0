"""The one image-loading path: bytes, a path or a file -> an upright uint8 array of the model's size.

Indexing and querying both go through `load_image`, so there is no train/serve skew.
"""
from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# Formats we accept. Only their plugins ever see the bytes: Image.open is told to try no other, so EPS/PDF (which
# would run Ghostscript) and the rarer plugins (PSD, whose header parser the fuzzer crashed) are never reached.
OPENERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # Pillow's plugin ids; JPEG's also opens MPO (camera JPEGs)
SUPPORTED_FORMATS = frozenset(OPENERS) | {"MPO"}
READABLE = "JPEG, PNG, WebP, GIF, BMP and TIFF"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

# Pillow's decompression-bomb guard stays on (Image.MAX_IMAGE_PIXELS): past it Pillow warns, past twice that it
# raises. `_decoding` turns the warning into a refusal too, so no single upload can make us allocate gigabytes.

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, in words fit for a user."""


@dataclass(frozen=True)
class Decoded:
    """A preprocessed image and the size of the original."""

    pixels: np.ndarray  # (size, size, channels) uint8
    width: int
    height: int
    format: str = ""  # Pillow's name for the file's format: "JPEG", "PNG", ...


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty file")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
        raise ImageError("empty file")
    return Image.open(source, formats=OPENERS)


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Normalise palette, alpha, CMYK, 16-bit, float and bilevel images to 8-bit RGB or L."""
    if img.mode == "P":
        # Palette images may carry transparency; go through RGBA so it is composited, not dropped as black.
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High-bit-depth grey: rescale by the actual range rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), mode="L")
    target = "RGB" if channels == 3 else "L"
    if img.mode != target:
        img = img.convert(target)
    return img


@contextmanager
def _decoding():
    """Turn Pillow's zoo of failure types into ImageError, with the bomb warning treated as an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large (decompression-bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a recognised image (lookalike reads {READABLE})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError, ArithmeticError,
            struct.error) as exc:
        # Truncated and malformed files surface as any of these, depending on the codec (ArithmeticError: a header
        # field too large for a seek, found by tests/fuzz_decode.py).
        raise ImageError(f"unreadable image: {exc}") from None


def _open_upright(source: ImageSource, channels: int, draft_size: int) -> tuple[Image.Image, int, int, str]:
    """Open, check the format, decode (JPEG at reduced scale), apply EXIF orientation and normalise the mode."""
    img = _open(source)
    with img:
        if img.format not in SUPPORTED_FORMATS:
            raise ImageError(f"unsupported image format {img.format or 'unknown'}")
        width, height = img.size
        if img.format == "JPEG":
            # draft() lets libjpeg decode at 1/2, 1/4 or 1/8 scale: much faster for big photos.
            img.draft("L" if channels == 1 else "RGB", (draft_size, draft_size))
        img.seek(0)  # first frame of animations
        img.load()
        # Orientation from EXIF; after load so draft() has already shrunk the pixels.
        upright = _to_mode(ImageOps.exif_transpose(img), channels)
    return upright, width, height, img.format


def load_image(source: ImageSource, size: int, channels: int = 3) -> Decoded:
    """Decode `source` into a (size, size, channels) uint8 array, upright and mode-normalised."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    with _decoding():
        upright, width, height, format_ = _open_upright(source, channels, size)
        resized = upright.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = np.asarray(resized, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]  # (size, size) -> (size, size, 1)
    return Decoded(pixels=pixels, width=width, height=height, format=format_)


def peek_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) from the file's header alone, without decoding the pixels."""
    with _decoding(), _open(source) as img:
        return img.size


def is_grey(source: ImageSource) -> bool:
    """True when the image carries no colour (grey modes, or RGB with R == G == B up to JPEG noise)."""
    try:
        decoded = load_image(source, 32, channels=3)
    except ImageError:
        return False
    px = decoded.pixels.astype(np.int16)  # (32, 32, 3)
    return bool(np.abs(px[..., 0] - px[..., 1]).max() <= 8 and np.abs(px[..., 1] - px[..., 2]).max() <= 8)


def thumbnail_jpeg(source: ImageSource, max_side: int, quality: int = 85) -> bytes:
    """A JPEG thumbnail at most `max_side` pixels on its long side, upright, aspect kept."""
    with _decoding():
        upright, *_ = _open_upright(source, 3, max_side)
        upright.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=3.0)
        out = io.BytesIO()
        upright.save(out, "JPEG", quality=quality)
        return out.getvalue()
