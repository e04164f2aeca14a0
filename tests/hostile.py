"""A corpus of hostile and awkward image files, generated here (nothing downloaded).

Each entry: kind, a file name (the extension lies where that is the point), the bytes, and whether lookalike
must refuse it ("error") or use it ("ok").
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from benchmarks.harness import make_image
from tests.formats import (
    IPHONE_HEIC,
    avif_bomb,
    encode,
    grey16,
    heic_bomb,
    heic_understating_its_size,
    heic_with_primary_second,
    pnm_bomb,
)


@dataclass(frozen=True)
class Hostile:
    kind: str
    name: str
    data: bytes
    expect: str  # "error" or "ok"


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(side: int = 100_000) -> bytes:
    """A PNG declaring side x side pixels (30 GB as RGB) in a few hundred bytes of zeros."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    # A few rows' worth of compressed zeros: decoding would need all side*side*3 bytes.
    data = _png_chunk(b"IDAT", zlib.compress(b"\x00" * (side * 3 + 1) * 4, 9))
    return b"\x89PNG\r\n\x1a\n" + header + data + _png_chunk(b"IEND", b"")


def gif_bomb() -> bytes:
    """A GIF whose logical screen and frame claim 65535 x 65535 pixels."""
    small = bytearray(_save(Image.new("P", (8, 8)), "GIF"))
    small[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen size
    at = small.index(b"\x2c")  # image descriptor: its width and height follow left and top
    small[at + 5 : at + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(small)


def psd(width: int = 16, height: int = 16) -> bytes:
    """A minimal uncompressed 3-channel Photoshop file (Pillow can read these; lookalike does not accept them)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    body = struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + os.urandom(width * height * 3)
    return header + body


def animated_gif(frames: int = 3000) -> bytes:
    """Thousands of tiny frames: only the first must be decoded."""
    images = [Image.new("P", (8, 8), i % 256) for i in range(frames)]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)


# For each EXIF orientation, how to store an upright picture so that a viewer honouring the tag shows it upright
# again (the inverse of the viewer's transform; 6 and 8 are each other's inverse, the rest undo themselves).
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def upright() -> Image.Image:
    """A picture with no symmetry: a bright block in one corner over a gradient."""
    pixels = np.zeros((48, 48, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 200, 48, dtype=np.uint8)[None, :]
    pixels[4:16, 4:20] = (255, 255, 0)
    return Image.fromarray(pixels)


def with_orientation(orientation: int, fmt: str = "JPEG") -> bytes:
    """A file tagged with EXIF orientation `orientation` (1-8) whose correctly oriented view is upright().

    HEIF and AVIF writers turn the tag into the container's rotation and mirroring boxes (irot, imir), as phones do.
    """
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = upright() if STORED[orientation] is None else upright().transpose(STORED[orientation])
    return encode(stored, fmt, exif=exif.tobytes(), quality=95)


def gif_html_polyglot() -> bytes:
    """A valid GIF that is also an HTML page: served as-is, a browser sniffing it would run the script."""
    gif = bytearray(_save(Image.new("P", (8, 8), 3), "GIF", comment=b"<html><script>alert(1)</script></html>"))
    return bytes(gif) + b"<script>alert(document.domain)</script>"


def corpus() -> list[Hostile]:
    """Every kind, with what lookalike must do with it."""
    rng = np.random.default_rng(7)
    good_jpeg = _save(make_image(1, 64), "JPEG", quality=90)
    good_png = _save(make_image(2, 64), "PNG")
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
           b"newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n")
    pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    sixteen = Image.fromarray((rng.random((32, 32)) * 65535).astype(np.uint16))  # mode I;16
    palette = make_image(3, 32).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    entries = [
        Hostile("PNG decompression bomb (100000x100000 declared)", "bomb.png", png_bomb(), "error"),
        Hostile("GIF decompression bomb (65535x65535 declared)", "bomb.gif", gif_bomb(), "error"),
        Hostile("truncated JPEG", "truncated.jpg", good_jpeg[: len(good_jpeg) // 2], "error"),
        Hostile("truncated PNG", "truncated.png", good_png[: len(good_png) // 2], "error"),
        Hostile("zero-byte file", "empty.jpg", b"", "error"),
        Hostile("random bytes named .jpg", "random.jpg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "error"),
        Hostile("JPEG header then random bytes", "garbage.jpg", b"\xff\xd8\xff\xe0" + os.urandom(2048), "error"),
        Hostile("EPS renamed .jpg", "eps.jpg", eps, "error"),
        Hostile("PDF renamed .jpg", "pdf.jpg", pdf, "error"),
        Hostile("PSD renamed .jpg", "psd.jpg", psd(), "error"),
        Hostile("TIFF renamed .jpg (a real image: used by its content)", "tiff.jpg",
                _save(make_image(4, 32), "TIFF"), "ok"),
        Hostile("16-bit greyscale PNG", "sixteen.png", _save(sixteen, "PNG"), "ok"),
        Hostile("CMYK JPEG", "cmyk.jpg", _save(make_image(5, 32).convert("CMYK"), "JPEG"), "ok"),
        Hostile("palette PNG with transparency", "palette.png", _save(palette, "PNG"), "ok"),
        Hostile("animated GIF, 3000 frames", "animated.gif", animated_gif(), "ok"),
        Hostile("1x1 image", "one.png", _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "ok"),
        Hostile("20000x10 image", "strip.png", _save(Image.new("RGB", (20000, 10), (10, 200, 10)), "PNG"), "ok"),
        Hostile("GIF/HTML polyglot", "polyglot.gif", gif_html_polyglot(), "ok"),
    ]
    entries += [Hostile(f"EXIF orientation {o}", f"orientation{o}.jpg", with_orientation(o), "ok") for o in range(1, 9)]
    return entries + newer_formats(rng)


def newer_formats(rng: np.random.Generator) -> list[Hostile]:
    """HEIC, AVIF and Netpbm: bombs, truncations and lies, and the awkward files that must still be used."""
    heic = encode(make_image(11, 64), "HEIF", quality=90)
    avif = encode(make_image(12, 64), "AVIF", quality=90)
    ppm = encode(make_image(13, 64), "PPM")
    ftyp = heic[: int.from_bytes(heic[:4], "big")]  # a real HEIC's first box, then noise
    return [
        Hostile("HEIC decompression bomb (20000x20000 declared)", "bomb.heic", heic_bomb(), "error"),
        Hostile("AVIF decompression bomb (15000x15000 declared)", "bomb15k.avif", avif_bomb(15_000), "error"),
        Hostile("AVIF decompression bomb (20000x20000 declared, past libavif's own limit)", "bomb.avif",
                avif_bomb(), "error"),
        Hostile("HEIC coding a larger picture than it declares", "understated.heic", heic_understating_its_size(),
                "error"),
        Hostile("PPM decompression bomb (100000x100000 declared)", "bomb.ppm", pnm_bomb(), "error"),
        Hostile("truncated HEIC", "truncated.heic", heic[: len(heic) // 2], "error"),
        Hostile("truncated AVIF", "truncated.avif", avif[: len(avif) // 2], "error"),
        Hostile("truncated PPM", "truncated.ppm", ppm[: len(ppm) // 2], "error"),
        Hostile("HEIC file type box then random bytes", "garbage.heic",
                ftyp + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(), "error"),
        Hostile("PGM with maxval 0", "maxval0.pgm", b"P5\n4 4\n0\n" + bytes(16), "error"),
        Hostile("iPhone HEIC photo (tiled, two images, thumbnail)", "iphone.heic", IPHONE_HEIC.read_bytes(), "ok"),
        Hostile("HEIC renamed .jpg (used by its content)", "heic.jpg", heic, "ok"),
        Hostile("HEIC whose primary image is the second", "primary.heic",
                heic_with_primary_second((255, 0, 0), (0, 0, 255)), "ok"),
        Hostile("HEIC with alpha", "alpha.heic", encode(make_image(14, 40).convert("RGBA"), "HEIF"), "ok"),
        Hostile("10-bit greyscale HEIC", "ten.heic", encode(grey16(1), "HEIF"), "ok"),
        Hostile("HEIC rotated by its irot box (EXIF orientation 6)", "rotated.heic", with_orientation(6, "HEIF"),
                "ok"),
        Hostile("AVIF with alpha", "alpha.avif", encode(make_image(15, 40).convert("RGBA"), "AVIF"), "ok"),
        Hostile("AVIF rotated by its irot box (EXIF orientation 6)", "rotated.avif", with_orientation(6, "AVIF"),
                "ok"),
        Hostile("16-bit PGM", "sixteen.pgm", encode(grey16(2), "PPM"), "ok"),
        Hostile("plain (ASCII) PPM", "plain.ppm", b"P3\n2 2\n255\n255 0 0  0 255 0\n0 0 255  255 255 255\n", "ok"),
        Hostile("bilevel PBM", "bilevel.pbm", encode(make_image(16, 40).convert("1"), "PPM"), "ok"),
    ]
