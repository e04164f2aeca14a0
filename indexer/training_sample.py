"""What a new encoder trains on, chosen from the collection: which images, at what input size, colour or grey."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from encoder.preprocess import ImageError, peek_size
from indexer.decode import DecodedFile, decode_all, stack_pixels
from indexer.scan import FileEntry

log = logging.getLogger(__name__)

GREY_SAMPLE = 200  # images looked at to decide whether a collection is grey
SIZE_SAMPLE = 200  # image headers read to choose the model's input size


def natural_image_size(root: Path, entries: list[FileEntry], largest: int) -> int:
    """The model's input side for a collection: `largest`, unless its images are smaller (28x28 digits train at 28).

    Upsampling small images only costs training time; a side that is a multiple of 4 keeps the encoder's
    stride-2 steps exact.
    """
    sides = []
    for entry in entries[:: max(1, len(entries) // SIZE_SAMPLE)][:SIZE_SAMPLE]:
        try:
            sides.append(min(peek_size(root / entry.relpath)))
        except ImageError:
            continue
    if not sides:
        return largest
    return int(min(largest, max(16, int(np.median(sides)) // 4 * 4)))


def training_sample(entries: list[FileEntry], limit: int) -> list[FileEntry]:
    """At most `limit` of `entries`, uniformly at random but the same on every run, in scan order."""
    if len(entries) <= limit:
        return entries
    rng = np.random.default_rng(0)
    return [entries[i] for i in sorted(rng.choice(len(entries), limit, replace=False))]


def _all_grey(pixels: np.ndarray) -> bool:
    px = pixels[:GREY_SAMPLE].astype(np.int16)  # (n, S, S, 3)
    return bool(np.abs(px[..., 0] - px[..., 1]).max() <= 8 and np.abs(px[..., 1] - px[..., 2]).max() <= 8)


def read_training_sample(root: Path, sample: list[FileEntry], size: int, workers: int,
                         progress: bool) -> tuple[int, list[DecodedFile]]:
    """Decode `sample` at `size`; returns the channels to train with (1 when every image looked at is grey) and
    the images that could be read, decoded with that many channels."""

    def read(channels: int, desc: str) -> list[DecodedFile]:
        return [d for d in decode_all(root, sample, size, channels, workers, progress, desc) if d.pixels is not None]

    decoded = read(3, "reading for training")
    if decoded and _all_grey(stack_pixels(decoded[:GREY_SAMPLE])):
        # Re-read through the same Pillow path the queries will take, so training sees exactly their pixels.
        log.info("every sampled image is grey: training a single-channel model")
        return 1, read(1, "reading for training (grey)")
    return 3, decoded
