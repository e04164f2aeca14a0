"""Coverage-guided fuzzing of the decode -> preprocess path with atheris (libFuzzer for Python).

    python -m tests.fuzz_decode -max_total_time=600        # the long run: ten minutes
    python -m tests.fuzz_decode -runs=2000                 # what the test suite runs

Every input must either come out as a (16, 16, 3) uint8 array or raise ImageError, the one documented failure;
anything else (another exception, a crash, a hang past -timeout, memory past -rss_limit_mb) is a finding, and
libFuzzer writes the input that caused it to ./crash-* for replay. The seed corpus is the hostile corpus of
tests/hostile.py plus a few ordinary images in every supported format, written to a temporary folder.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():  # coverage of Pillow's Python side and ours guides the mutations
    import PIL.Image
    import PIL.ImageOps  # noqa: F401
    import pillow_heif  # noqa: F401  (its Python side; libheif, libavif and the codecs are reached uninstrumented)

    PIL.Image.init()  # every format plugin, imported now so that it is instrumented too
    from encoder.preprocess import ImageError, load_image


def one_input(data: bytes) -> None:
    """The property: a usable array, or ImageError."""
    try:
        decoded = load_image(data, 16, 3)
    except ImageError:
        return
    if decoded.pixels.shape != (16, 16, 3) or decoded.pixels.dtype.name != "uint8":
        raise AssertionError(f"decoded to {decoded.pixels.shape} {decoded.pixels.dtype}")


# Inputs that once broke the property (now ImageError), kept as seeds so that every run re-checks them.
FINDINGS = [
    # A PSD header whose layer offset overflows a seek: OverflowError out of PIL.PsdImagePlugin (2026-11-25).
    "OEJQUwABAAAAAAAAAP////////8HEAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
]


def seed_corpus(folder: Path) -> None:
    """The hostile corpus, one ordinary image per format, and past findings."""
    import base64

    for i, finding in enumerate(FINDINGS):
        (folder / f"finding-{i:02d}").write_bytes(base64.b64decode(finding))
    from tests.formats import encode
    from tests.hostile import corpus
    from tests.support import make_image

    for i, h in enumerate(corpus()):
        if len(h.data) < 200_000:  # libFuzzer mutates better from small seeds
            (folder / f"hostile-{i:02d}").write_bytes(h.data)
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "AVIF", "HEIF", "PPM"):
        (folder / f"seed-{fmt.lower()}").write_bytes(encode(make_image(len(fmt) * 7, 24), fmt))
    (folder / "seed-pgm").write_bytes(encode(make_image(5, 24, "L"), "PPM"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lookalike-fuzz-") as tmp:
        seed_corpus(Path(tmp))
        defaults = ["-timeout=10", "-rss_limit_mb=3072", "-max_len=65536"]
        atheris.Setup([sys.argv[0], *defaults, *sys.argv[1:], tmp], one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
