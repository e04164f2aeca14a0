"""The one preprocessing path: formats, orientation, modes, and refusals with clear reasons."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from encoder.preprocess import ImageError, is_grey, load_image, thumbnail_jpeg
from tests.support import make_image


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_format_decodes_to_the_model_shape(fmt):
    decoded = load_image(encoded(make_image(1, 40), fmt), 16, 3)
    assert decoded.pixels.shape == (16, 16, 3) and decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height) == (40, 40)
    assert decoded.pixels.std() > 5  # real content, not a blank


def test_sources_path_bytes_and_file_agree(tmp_path):
    path = tmp_path / "a.png"
    make_image(2).save(path)
    from_path = load_image(path, 16).pixels
    assert np.array_equal(from_path, load_image(path.read_bytes(), 16).pixels)
    with open(path, "rb") as fh:
        assert np.array_equal(from_path, load_image(fh, 16).pixels)


def test_grey_output_has_one_channel():
    assert load_image(encoded(make_image(3), "PNG"), 16, 1).pixels.shape == (16, 16, 1)


def test_exif_orientation_is_applied():
    # A 40x20 image whose left half is black and right half white, stored with orientation 6 (rotate 90 CW).
    img = Image.new("RGB", (40, 20), "white")
    img.paste((0, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = load_image(encoded(img, "JPEG", exif=exif, quality=95), 20, 1)
    assert (decoded.width, decoded.height) == (40, 20)  # the stored size is reported
    px = decoded.pixels[..., 0].astype(int)
    # After rotating 90 degrees clockwise, the black half is on top.
    assert px[:8].mean() < 60 and px[-8:].mean() > 200


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    px = load_image(data, 8).pixels
    assert px[..., 0].mean() > 200 and px[..., 2].mean() < 50


def test_palette_transparency_is_composited_on_white():
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0] * 256)
    data = encoded(img, "PNG", transparency=0)
    assert load_image(data, 8).pixels.min() == 255


@pytest.mark.parametrize("mode", ["RGBA", "LA", "CMYK", "L", "1", "I;16", "I", "F"])
def test_unusual_modes_are_normalised(mode):
    base = make_image(4, 24)
    if mode in ("I;16", "I", "F"):
        arr = np.asarray(base.convert("L"), dtype=np.uint16) * 200  # spans 0..51000
        img = Image.fromarray(arr.astype(np.uint16)) if mode == "I;16" else Image.fromarray(
            arr.astype(np.int32 if mode == "I" else np.float32))
        fmt = "PNG" if mode == "I;16" else "TIFF"
    else:
        img, fmt = base.convert(mode), ("TIFF" if mode == "CMYK" else "PNG")
    pixels = load_image(encoded(img, fmt), 16, 3).pixels
    assert pixels.shape == (16, 16, 3)
    assert pixels.max() > pixels.min()  # content survived (16-bit rescaled, not clipped to white)


def _png_with_size(width: int, height: int) -> bytes:
    """A valid PNG header that declares a huge size: the classic decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"GIF89a this is not really", "unreadable|not a recognised"),
    (np.random.default_rng(0).bytes(3000), "not a recognised"),
    (_png_with_size(100_000, 100_000), "decompression-bomb"),
    (_png_with_size(12_000, 12_000), "decompression-bomb"),  # over MAX_IMAGE_PIXELS: the warning is refused too
    (encoded(make_image(5, 64), "JPEG")[:300], "unreadable"),
    (encoded(make_image(6, 64), "PNG")[:200], "unreadable"),
    (encoded(make_image(7, 16), "TGA"), "not a recognised image .lookalike reads JPEG, PNG"),  # Pillow reads it
    (b"8BPS\0\1" + b"\0" * 7 + b"\xff" * 7 + b"\x07\x10\0\x08" + b"\0" * 24, "not a recognised"),  # fuzz find
])
def test_bad_input_raises_image_error_with_reason(data, reason):
    import re

    with pytest.raises(ImageError, match=re.compile(reason)):
        load_image(data, 16)


def test_large_jpeg_uses_draft_and_keeps_content():
    big = make_image(8, 64).resize((2048, 1536))
    decoded = load_image(encoded(big, "JPEG"), 32)
    small = load_image(encoded(big.resize((32, 32)), "PNG"), 32)
    assert (decoded.width, decoded.height) == (2048, 1536)
    assert np.abs(decoded.pixels.astype(int) - small.pixels.astype(int)).mean() < 12


def test_is_grey():
    assert is_grey(encoded(make_image(9).convert("L").convert("RGB"), "JPEG"))
    assert not is_grey(encoded(make_image(9), "JPEG"))


def test_thumbnail_keeps_aspect(tmp_path):
    path = tmp_path / "wide.png"
    make_image(10, 64).resize((400, 100)).save(path)
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(path, 128)))
    assert thumb.format == "JPEG" and thumb.size == (128, 32)
