"""Edited copies of the query: a check, after the code search, that puts the query's own original first.

The 30-number code finds images that look alike, and stays close under everyday edits; but a box over a quarter of
a picture can move a code further than the gap to a similar-looking stranger. So every image also keeps a *sketch*:
a 16x16 grey copy of the pixels the encoder sees (256 bytes). For a query, the code search's shortlist is compared
with the query's sketch by a trimmed distance, which ignores the quarter of the pixels that differ most (wherever a
cover-up, a caption or a crop's new edge fell), and the best candidate is promoted to the front only when it is
clearly better than the runner-up (Lowe's ratio test). A query with no copy in the collection has no clear winner,
so its ranking is left as the codes made it: the check promotes copies without spoiling "alike".
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from indexer.resample import area_weights

SKETCH_SIDE = 16  # sketch is SKETCH_SIDE x SKETCH_SIDE grey pixels
SKETCH_BYTES = SKETCH_SIDE * SKETCH_SIDE
SHORTLIST = 100  # candidates from the code search that the check looks at
KEEP = 0.75  # share of a sketch's pixels, the best-matching ones, that the trimmed distance sums
# Crop windows (start, end as shares of a side) the duplicate finder tries on sketches: whole, a tenth or a fifth
# split between both ends, a tenth off one end or the other.
SKETCH_WINDOWS = ((0.0, 1.0), (0.05, 0.95), (0.1, 0.9), (0.1, 1.0), (0.0, 0.9))
RATIO = 0.5  # the best candidate is a copy when its trimmed distance is below RATIO x the runner-up's


def sketches(pixels: np.ndarray) -> np.ndarray:
    """(n, S, S, C) uint8 model-input pixels -> (n, SKETCH_BYTES) uint8 grey sketches, area-averaged."""
    if pixels.ndim != 4:
        raise ValueError(f"expected (n, S, S, C) pixels, got {pixels.shape}")
    grey = pixels.astype(np.float32).mean(axis=3)  # (n, S, S)
    rows, cols = area_weights(pixels.shape[1], SKETCH_SIDE), area_weights(pixels.shape[2], SKETCH_SIDE)
    small = rows @ grey @ cols.T  # (n, SIDE, SIDE); matmul, not einsum: 0.27 ms less per query
    return np.clip(np.round(small), 0, 255).astype(np.uint8).reshape(len(pixels), SKETCH_BYTES)


def trimmed_distances(query: np.ndarray, candidates: np.ndarray, keep: float = KEEP) -> np.ndarray:
    """(SKETCH_BYTES,) and (m, SKETCH_BYTES) uint8 sketches -> (m,) mean of the smallest `keep` squared differences."""
    # A brightened copy differs from its original by about one offset everywhere: _trimmed takes it out. The median
    # is the offset of most pixels, so a box over a quarter of the picture does not move it.
    return _trimmed(candidates.astype(np.float32) - query.astype(np.float32)[None, :], keep)  # (m,)


@lru_cache(maxsize=1)
def _window_matrices() -> np.ndarray:
    """(W, SIDE, SIDE) area weights taking a crop window of a sketch back to SIDE pixels per axis (SKETCH_WINDOWS)."""
    return np.stack([area_weights(SKETCH_SIDE, SKETCH_SIDE, lo, hi) for lo, hi in SKETCH_WINDOWS])


def cropped_sketches(sketch_rows: np.ndarray) -> np.ndarray:
    """(m, SKETCH_BYTES) sketches -> (m, V, SKETCH_BYTES) float32: each as it would look cropped by up to a fifth of
    its sides (every pair of row and column windows of SKETCH_WINDOWS), resized back."""
    grid = sketch_rows.reshape(-1, SKETCH_SIDE, SKETCH_SIDE).astype(np.float32)
    w = _window_matrices()  # (W, SIDE, SIDE)
    views = np.einsum("ais,mst,bjt->mabij", w, grid, w, optimize=True)  # (m, W, W, SIDE, SIDE)
    return views.reshape(len(grid), len(w) ** 2, SKETCH_BYTES)


def crop_tolerant_distances(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(SKETCH_BYTES,) and (m, SKETCH_BYTES) sketches -> (m,) the smallest trimmed distance between either one and
    a crop of the other: a copy cropped by a tenth of each side still lines up with its original."""
    query_views = cropped_sketches(query[None])[0]  # (V, P)
    candidate_views = cropped_sketches(candidates)  # (m, V, P)
    forward = _trimmed(query_views[None, :, :] - candidates.astype(np.float32)[:, None, :])  # (m, V)
    backward = _trimmed(candidate_views - query.astype(np.float32)[None, None, :])  # (m, V)
    return np.minimum(forward.min(axis=1), backward.min(axis=1))


def _trimmed(diff: np.ndarray, keep: float = KEEP) -> np.ndarray:
    """(..., P) pixel differences -> (...) mean of the smallest `keep` share of squared, offset-free differences."""
    middle = diff.shape[-1] // 2  # the median by one partial sort: np.median costs several times more
    offset = np.partition(diff, middle, axis=-1)[..., middle : middle + 1]
    diff = np.square(diff - offset) / 255.0**2
    kept = max(1, int(round(keep * diff.shape[-1])))
    return np.partition(diff, kept - 1, axis=-1)[..., :kept].mean(axis=-1)


def find_copy(query: np.ndarray, candidates: np.ndarray, ratio: float = RATIO) -> int | None:
    """The row of `candidates` that is clearly an edited copy of `query` (or its original), else None."""
    if len(candidates) < 2:
        return None
    distances = trimmed_distances(query, candidates)
    best, second = np.argsort(distances)[:2]
    return int(best) if distances[best] < ratio * distances[second] else None


def copy_first(order: np.ndarray, query: np.ndarray, candidates: np.ndarray,
               ratio: float = RATIO) -> tuple[np.ndarray, int | None]:
    """The shortlist `order` (row numbers, nearest code first) with the query's copy moved to the front.

    `candidates` holds the sketches of the rows in `order`, in the same order. Returns the new order and the
    position the copy came from (None when there is no clear copy: the order is then unchanged).
    """
    found = find_copy(query, candidates, ratio)
    if found is None or found == 0:
        return order, found
    return np.concatenate([order[found : found + 1], order[:found], order[found + 1 :]]), found
