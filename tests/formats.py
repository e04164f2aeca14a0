"""Sample files in the formats phones and scientific collections write: HEIC, AVIF and Netpbm, good and bad.

HEIC is written with pillow-heif (its encoder, x265, ships in the wheel), AVIF with Pillow's own plugin; the one
real iPhone photo is tests/data/iphone-xs.heic (see tests/data/README.md).
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

IPHONE_HEIC = Path(__file__).resolve().parent / "data" / "iphone-xs.heic"


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    """`image` saved as `fmt` ("HEIF", "AVIF", "PPM", ...) into bytes."""
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()  # for saving; lookalike registers it for reading on its own
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """A HEIF or AVIF file whose `ispe` box (the size its header declares) is rewritten to width x height."""
    patched = bytearray(data)
    at = patched.index(b"ispe")  # then version and flags (4 bytes), width and height (4 each)
    patched[at + 8 : at + 16] = struct.pack(">II", width, height)
    return bytes(patched)


def heic_bomb(side: int = 20_000) -> bytes:
    """A 64 x 64 HEIC that declares side x side pixels."""
    return with_declared_size(encode(Image.new("RGB", (64, 64), (40, 90, 200)), "HEIF"), side, side)


def avif_bomb(side: int = 20_000) -> bytes:
    """A 64 x 64 AVIF that declares side x side pixels (past 16384 x 16384 libavif itself refuses the header)."""
    return with_declared_size(encode(Image.new("RGB", (64, 64), (200, 90, 40)), "AVIF"), side, side)


def heic_understating_its_size() -> bytes:
    """A 512 x 512 HEIC whose header declares 32 x 32: libheif refuses the larger coded picture."""
    return with_declared_size(encode(Image.new("RGB", (512, 512), (90, 90, 90)), "HEIF"), 32, 32)


def pnm_bomb(side: int = 100_000) -> bytes:
    """A binary PPM header declaring side x side pixels over a few bytes of data."""
    return f"P6\n{side} {side}\n255\n".encode() + bytes(64)


def heic_with_primary_second(first: tuple, primary: tuple) -> bytes:
    """A HEIC holding two 32 x 32 images of colours `first` and `primary`, the second marked primary."""
    images = [Image.new("RGB", (32, 32), first), Image.new("RGB", (32, 32), primary)]
    return encode(images[0], "HEIF", save_all=True, append_images=images[1:], primary_index=1)


def grey16(seed: int = 0, size: int = 32) -> Image.Image:
    """A 16-bit greyscale picture (mode I;16) spanning most of 0..65535."""
    return Image.fromarray((np.random.default_rng(seed).random((size, size)) * 65535).astype(np.uint16))
