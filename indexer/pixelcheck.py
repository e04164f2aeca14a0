"""Is one image an edited copy of another? An aligned comparison of their pixels, for the near-duplicate finder.

Codes and 16x16 sketches find candidate pairs cheaply, but neither can tell an edited copy from a different photo
of the same thing (two studio shots of one motorbike model, a statue photographed twice). The pixels can: a copy
keeps every fine edge where the original had it, a second photo does not. Both images are decoded again in grey
at SOURCE_SIDE pixels, and one is cropped and resized onto the other over a range of crop windows (up to
MAX_CROP of each side, either image inside the other), coarse to fine. The score is the best normalised correlation
of the two band-passed pictures: band-passing keeps the edges and drops what a copy changes freely (brightness,
contrast, the blur of a re-encode or a resize). 1.0 is the same picture; different photos of one scene score lower
the more their details differ.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.resample import area_weights

log = logging.getLogger(__name__)

SOURCE_SIDE = 128  # grey pixels each image is decoded to for the check
CHECK_SIDE = 64  # the final comparison's side
COARSE_SIDE = 32  # the first, exhaustive search's side
MAX_CROP = 0.12  # the largest share of a side the search crops away
COARSE_STEPS = 4  # crop values per side in the exhaustive search: 0, MAX_CROP / 3, ..., MAX_CROP
COARSE_REJECT = 0.5  # a pair whose best coarse score is below this is not refined (planted copies: 0.7 and up)
REFINEMENTS = 3  # searches around the best window at CHECK_SIDE, each with half the last one's step
LOW_DETAIL = 64  # an image smaller than this on its smaller side holds too little detail for the check at
# SOURCE_SIDE, so its pair is compared at its own detail (above it, matching the detail costs copies more than the
# missing detail does: a 91-pixel copy of a photo scores 0.958 as it is, 0.950 brought to the same detail)
# Every (start, end) span of a side the exhaustive search tries: each end cropped by 0 to MAX_CROP.
COARSE_SPANS = [(float(lo), float(1.0 - hi)) for lo in np.linspace(0.0, MAX_CROP, COARSE_STEPS)
                for hi in np.linspace(0.0, MAX_CROP, COARSE_STEPS)]
BLOCK_PAIRS = 1024  # pairs checked together: their images are decoded once and then dropped (64 KB each)
BAND = (0.7, 3.0)  # Gaussian sigmas, in CHECK_SIDE pixels, of the band-pass: edges, not shading (scaled per side)


@lru_cache(maxsize=8)
def _band_matrices(side: int) -> tuple[np.ndarray, np.ndarray]:
    """(side, side) Gaussian blurs at the two band-pass sigmas, scaled to `side`; rows sum to 1 (edges renormalised)."""
    x = np.arange(side, dtype=np.float64)
    blurs = []
    for sigma in BAND:
        scaled = sigma * side / CHECK_SIDE
        g = np.exp(-0.5 * ((x[:, None] - x[None, :]) / scaled) ** 2)
        blurs.append((g / g.sum(axis=1, keepdims=True)).astype(np.float32))
    return blurs[0], blurs[1]


def band_pass(images: np.ndarray) -> np.ndarray:
    """(..., s, s) -> (..., s, s): fine blur less coarse blur, the detail a copy keeps."""
    fine, coarse = _band_matrices(images.shape[-1])
    return fine @ images @ fine.T - coarse @ images @ coarse.T


def _correlation(warped: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(..., s, s) and (s, s) band-passed pictures -> (...) normalised correlations."""
    a = warped - warped.mean(axis=(-1, -2), keepdims=True)
    b = target - target.mean()
    return (a * b).sum(axis=(-1, -2)) / np.sqrt((a * a).sum(axis=(-1, -2)) * (b * b).sum() + 1e-12)


def _spans(centres: list[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    """Crop spans (start, end) around each centre, moved by -step, 0, +step at each end, within the picture."""
    found = {(round(min(max(lo + a, 0.0), MAX_CROP), 5), round(max(min(hi + b, 1.0), 1.0 - MAX_CROP), 5))
             for lo, hi in centres for a in (-step, 0.0, step) for b in (-step, 0.0, step)}
    return sorted(found)


def _search(big: np.ndarray, target: np.ndarray, rows: list[tuple[float, float]],
            cols: list[tuple[float, float]]) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """The best correlation of `target` (s, s, band-passed) with `big` (source, source) cropped to a row span and a
    column span, resized to s and band-passed; returns it with the two spans."""
    side, source = target.shape[0], big.shape[0]
    r = np.stack([area_weights(source, side, lo, hi) for lo, hi in rows])  # (R, s, source)
    c = np.stack([area_weights(source, side, lo, hi) for lo, hi in cols])  # (C, s, source)
    warped = np.einsum("ris,st->rit", r, big, optimize=True)  # (R, s, source)
    warped = np.einsum("rit,cjt->rcij", warped, c, optimize=True)  # (R, C, s, s)
    scores = _correlation(band_pass(warped), target)  # (R, C)
    best_r, best_c = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[best_r, best_c]), rows[best_r], cols[best_c]


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    """(n, n) -> (side, side) by averaging blocks; n must be a multiple of side."""
    f = image.shape[0] // side
    return image.reshape(side, f, side, f).mean(axis=(1, 3))


def limit_detail(image: np.ndarray, side: int) -> np.ndarray:
    """(SOURCE_SIDE, SOURCE_SIDE) grey with no more detail than a picture `side` pixels across has, when `side` is
    below LOW_DETAIL: shrunk to it and enlarged back. A thumbnail of a photo is then compared with the photo on what
    it still holds (the photo's finer edges would count against it otherwise)."""
    from PIL import Image

    if side >= LOW_DETAIL:
        return image
    small = Image.fromarray(image, mode="F").resize((side, side), Image.Resampling.BOX)
    return np.asarray(small.resize((SOURCE_SIDE, SOURCE_SIDE), Image.Resampling.BILINEAR), np.float32)


def match_score(a: np.ndarray, b: np.ndarray, sides: tuple[int, int] = (SOURCE_SIDE, SOURCE_SIDE)) -> float:
    """How well one of two (SOURCE_SIDE, SOURCE_SIDE) grey images is a crop of the other, resized: the best
    band-passed correlation over crop windows, in [-1, 1] (1: the same picture). `sides`: each image's smaller
    side in pixels; when one is a thumbnail (below LOW_DETAIL), the other is brought down to its detail."""
    if sides[0] > sides[1]:
        a = limit_detail(a, sides[1])
    elif sides[1] > sides[0]:
        b = limit_detail(b, sides[0])
    # Every window at COARSE_SIDE first, either image inside the other: the crop of a copy can be anywhere in the
    # range. Only the better of the two directions is refined (a copy lines up one way round, not the other).
    coarse = []
    for big, small in ((a, b), (b, a)):
        target = band_pass(_shrink(small, COARSE_SIDE))
        coarse.append((*_search(_shrink(big, COARSE_SIDE * 2), target, COARSE_SPANS, COARSE_SPANS), big, small))
    score, rows, cols, big, small = max(coarse, key=lambda found: found[0])
    if score < COARSE_REJECT:
        return score  # far from a copy already: refining would not bring it near MATCH_THRESHOLD
    target = band_pass(_shrink(small, CHECK_SIDE))
    step = MAX_CROP / (COARSE_STEPS - 1) / 2
    for _ in range(REFINEMENTS):
        # Rows, then columns (both ends of a side together, the other side held): a crop's rows and columns are
        # independent, so this finds what searching both at once would at a quarter of the cost.
        _, rows, cols = _search(big, target, _spans([rows], step), [cols])
        score, rows, cols = _search(big, target, [rows], _spans([cols], step))
        step /= 2
    return score


def load_grey(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """An image file (path, bytes or file) -> (SOURCE_SIDE, SOURCE_SIDE) float32 grey in [0, 1], squashed to a
    square the way the encoder sees it, and its smaller side in pixels. Raises encoder.preprocess.ImageError for
    what cannot be decoded."""
    from encoder.preprocess import load_image

    decoded = load_image(source, SOURCE_SIDE, channels=1)
    return decoded.pixels[:, :, 0].astype(np.float32) / 255.0, min(decoded.width, decoded.height)


class PairScores:
    """Pixel-check scores of image pairs, each measured once: files catalogued with the same sha256 score 1.0
    unchecked, and a pair with a file that cannot be read now (moved, removed, no longer an image) scores None."""

    def __init__(self, files: dict[int, Path], digests: dict[int, str]):
        self.files, self.digests = files, digests
        self.scores: dict[tuple[int, int], float | None] = {}
        self.unreadable: set[int] = set()

    def __call__(self, a: int, b: int) -> float | None:
        key = (min(a, b), max(a, b))
        if key not in self.scores:
            self.measure([key])
        return self.scores[key]

    def measure(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Score every pair not scored yet, a block of pairs at a time, each block's images decoded once.

        One thread: the check's matrix products already run on every core (OpenBLAS's threads), and a thread per
        core on top of them was measured slower (57 pairs/s against 86 on 2 cores)."""
        todo = sorted({(min(a, b), max(a, b)) for a, b in pairs} - self.scores.keys())
        for start in range(0, len(todo), BLOCK_PAIRS):
            block = todo[start : start + BLOCK_PAIRS]
            needed = sorted({i for pair in block if not self._identical(*pair) for i in pair})
            decoded = {i: self._load(i) for i in needed}
            self.scores.update((pair, self._score(pair, decoded)) for pair in block)

    def _identical(self, a: int, b: int) -> bool:
        return self.digests.get(a) is not None and self.digests.get(a) == self.digests.get(b)

    def _score(self, pair: tuple[int, int], decoded: dict[int, tuple[np.ndarray, int] | None]) -> float | None:
        if self._identical(*pair):
            return 1.0
        first, second = decoded[pair[0]], decoded[pair[1]]
        if first is None or second is None:
            return None
        return match_score(first[0], second[0], (first[1], second[1]))

    def _load(self, image_id: int) -> tuple[np.ndarray, int] | None:
        """An image decoded for the check (grey, smaller side), or None when its file cannot be read."""
        from encoder.preprocess import ImageError

        path = self.files.get(image_id)
        if path is None or image_id in self.unreadable:
            self.unreadable.add(image_id)
            return None
        try:
            return load_grey(path)
        except (ImageError, OSError) as why:
            log.warning("cannot check %s for copies: %s", path, why)
            self.unreadable.add(image_id)
            return None
