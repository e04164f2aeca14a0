"""Area resampling as a matrix: the one way the copy checks shrink, crop and resize small grey pictures."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4096)
def area_weights(source: int, out: int, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """(out, source) weights averaging the span [lo, hi) (shares of the side) of `source` pixels into `out` pixels
    by area, for any two sizes: `weights @ image @ weights.T` crops a square picture to that span and resizes it."""
    edges = np.linspace(lo * source, hi * source, out + 1)
    start, stop = edges[:-1, None], edges[1:, None]  # (out, 1) each output pixel's span
    left = np.arange(source)[None, :]  # (1, source) input pixel [left, left + 1)
    overlap = np.clip(np.minimum(stop, left + 1) - np.maximum(start, left), 0.0, None)  # (out, source)
    weights = (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)
    weights.flags.writeable = False  # shared by every caller through the cache
    return weights
