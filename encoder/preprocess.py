"""The one image-loading path: bytes, a path or a file -> an upright uint8 array of the model's size.

Indexing and querying both go through `load_image`, so there is no train/serve skew.
"""
from __future__ import annotations

import functools
import io
import logging
import os
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

log = logging.getLogger(__name__)

# Formats we accept. Only their plugins ever see the bytes: Image.open is told to try no other, so EPS/PDF (which
# would run Ghostscript) and the rarer plugins (PSD, whose header parser the fuzzer crashed) are never reached.
# Pillow's plugin ids. JPEG's also opens MPO (camera JPEGs); HEIF is pillow-heif's, registered on the first decode;
# PPM is Pillow's one plugin for all of Netpbm (PBM, PGM, PPM). AVIF comes before HEIF: both claim files branded
# `mif1`, and pillow-heif's libheif has no AV1 decoder, so an AVIF opened by the HEIF plugin would fail late, at
# decoding, whereas a HEIC that the AVIF plugin refuses goes on to the HEIF plugin.
OPENERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "HEIF", "PPM")
SUPPORTED_FORMATS = frozenset(OPENERS) | {"MPO"}
READABLE = "JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC (HEIF) and Netpbm"  # no "/": messages must not look like paths
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                              ".avif", ".heic", ".heif", ".hif", ".pbm", ".pgm", ".ppm", ".pnm"})

# Pillow's decompression-bomb guard stays on (Image.MAX_IMAGE_PIXELS): past it Pillow warns, past twice that it
# raises. `_decoding` turns the warning into a refusal too, so no single upload can make us allocate gigabytes.
# HEIF and AVIF plugins report the size their header declares, so the same guard sees them before any decoding.

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


@functools.cache
def _openers() -> tuple[str, ...]:
    """OPENERS whose plugin is present; pillow-heif's opener is registered here, on the first decode."""
    try:
        # Lazily: processes that never decode (the CLI's other commands) do not load libheif. Thumbnails, depth
        # and auxiliary images are switched off, so that only the primary image of a HEIC is ever decoded.
        from pillow_heif import register_heif_opener

        register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    except ImportError:
        pass
    Image.init()
    present = tuple(f for f in OPENERS if f in Image.OPEN and (f != "AVIF" or features.check("avif")))
    if missing := [f for f in OPENERS if f not in present]:
        log.warning("cannot read %s: install pillow-heif and a Pillow with AVIF (see requirements.txt)",
                    " or ".join(missing))
    return present


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty file")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
        raise ImageError("empty file")
    try:
        return Image.open(source, formats=_openers())
    except UnidentifiedImageError:
        # libavif refuses a header declaring more than 16384 x 16384 pixels without saying why; say it as the
        # guard does for every other format, rather than "not a recognised image".
        declared = _isobmff_declared_size(_head(source))
        if Image.MAX_IMAGE_PIXELS and declared[0] * declared[1] > Image.MAX_IMAGE_PIXELS:
            raise ImageError(f"image too large (decompression-bomb guard): it declares {declared[0]} x "
                             f"{declared[1]} pixels, over the limit of {Image.MAX_IMAGE_PIXELS}") from None
        raise


def _head(source: ImageSource, length: int = 65536) -> bytes:
    """The first `length` bytes of a path or a seekable file."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return fh.read(length)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:length])
    source.seek(0)
    return source.read(length)


def _isobmff_declared_size(head: bytes) -> tuple[int, int]:
    """The largest (width, height) among the `ispe` boxes of a HEIF/AVIF header, (0, 0) for other files."""
    if head[4:8] != b"ftyp":
        return 0, 0
    # A scan for the box type rather than a walk of the box tree: it only chooses the words of a refusal.
    largest, at = (0, 0), head.find(b"ispe")
    while 4 <= at <= len(head) - 16:  # size, "ispe", version and flags, then width and height
        width, height = struct.unpack_from(">II", head, at + 8)
        largest = max(largest, (width, height), key=lambda s: s[0] * s[1])
        at = head.find(b"ispe", at + 4)
    return largest


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
            RuntimeError, struct.error) as exc:
        # Truncated and malformed files surface as any of these, depending on the codec (ArithmeticError: a header
        # field too large for a seek, found by tests/fuzz_decode.py; RuntimeError: libheif's refusals, such as a
        # coded picture larger than the size its header declared).
        raise ImageError(f"unreadable image: {str(exc).strip()}") from None


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
        # First frame of animations; but a HEIF file opens on its primary image, which need not be its first
        # (burst shots, stereo pairs), and stays there.
        if img.format != "HEIF":
            img.seek(0)
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


def png_bytes(pixels: np.ndarray) -> bytes:
    """(S, S, C) uint8 pixels, C 1 or 3, as a PNG file's bytes."""
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
