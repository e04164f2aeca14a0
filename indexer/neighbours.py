"""The collection's nearest-neighbour graph, and the scale its distances are read on.

Every image's few nearest neighbours come from the vector index itself (one batched search over all codes, never
an all-pairs loop), so the graph costs what n searches cost: exact search up to 100,000 images, IVF above. The
first-neighbour distances make the collection's own yardstick: a distance's *percentile* is the share of
nearest-neighbour pairs in the collection that are further apart, so 99 reads "closer than 99% of the images are to
their nearest neighbour".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

GRAPH_NEIGHBOURS = 10  # neighbours kept per image: a duplicate group links through any of them
# Above this many images the graph is searched in an IVF index of the codes, made for it: n exact searches over n
# codes grow as n^2 (100,000 images: 50 s on 2 cores), IVF's as n^1.5 (1,000,000 images: 40 s).
GRAPH_EXACT_LIMIT = 20_000
SEARCH_BATCH = 4096  # queries per vector search: bounds the (batch, k) result arrays
QUANTILES = 1001  # the nearest-neighbour distances at every 0.1%


class Searchable(Protocol):
    """What the graph needs of a vector index (indexer.vectors.VectorIndex, indexer.live.LiveVectors)."""

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class NeighbourGraph:
    """Each image's nearest other images, nearest first."""

    ids: np.ndarray  # (n,) int64
    neighbours: np.ndarray  # (n, k) int64 ids, -1 where the collection has fewer images
    distances: np.ndarray  # (n, k) float32 Euclidean distances between codes, ascending, inf where -1

    @property
    def nearest(self) -> np.ndarray:
        """(m,) distance of every image that has a neighbour to its nearest one."""
        first = self.distances[:, 0] if self.distances.shape[1] else np.zeros(0, np.float32)
        return first[np.isfinite(first)]


def neighbour_graph(index: Searchable, ids: np.ndarray, codes: np.ndarray,
                    k: int = GRAPH_NEIGHBOURS) -> NeighbourGraph:
    """The `k` nearest other images of each of (n,) `ids` with (n, d) `codes`, found by searching `index`."""
    ids = np.asarray(ids, np.int64)
    out_i = np.full((len(ids), k), -1, np.int64)
    out_d = np.full((len(ids), k), np.inf, np.float32)
    for start in range(0, len(ids), SEARCH_BATCH):
        batch = slice(start, start + SEARCH_BATCH)
        distances, found = index.search(codes[batch], k + 1)  # (b, k + 1): the image itself is one of them
        for row, (d_row, i_row) in enumerate(zip(distances, found)):
            own = ids[start + row]
            # Not always in column 0: an identical copy ties with the image at distance 0.
            keep = (i_row >= 0) & (i_row != own)
            n = min(k, int(keep.sum()))
            out_i[start + row, :n] = i_row[keep][:n]
            out_d[start + row, :n] = d_row[keep][:n]
    return NeighbourGraph(ids, out_i, out_d)


def collection_graph(ids: np.ndarray, codes: np.ndarray, index: Searchable | None = None,
                     k: int = GRAPH_NEIGHBOURS) -> NeighbourGraph:
    """The graph of a whole collection: searched in `index` (the served vectors) up to GRAPH_EXACT_LIMIT images,
    else in an IVF index built over `codes` for the purpose (its recall@10 is measured and logged when built)."""
    if index is None or len(ids) > GRAPH_EXACT_LIMIT:
        from indexer.vectors import VectorIndex

        index = VectorIndex.build(ids, codes, generation=0, exact_limit=GRAPH_EXACT_LIMIT)
    return neighbour_graph(index, ids, codes, k)


def distance_quantiles(nearest: np.ndarray) -> list[float]:
    """The nearest-neighbour distances at every 0.1% ([] for fewer than two images): the percentile scale."""
    if len(nearest) < 2:
        return []
    return np.quantile(np.asarray(nearest, np.float64), np.linspace(0, 1, QUANTILES)).tolist()


def percentile(distance: float | np.ndarray, quantiles: np.ndarray) -> float | np.ndarray:
    """The share (0-100) of the collection's nearest-neighbour distances larger than `distance`; 50 without a scale."""
    if not len(quantiles):
        return 50.0 if np.isscalar(distance) else np.full(np.shape(distance), 50.0)
    # Ties (many equal quantiles, e.g. a collection full of exact copies at distance 0) take the middle of their span.
    grid = np.linspace(0.0, 100.0, len(quantiles))
    below = np.interp(distance, quantiles, grid, left=0.0, right=100.0)
    reversed_q = -quantiles[::-1]
    above = 100.0 - np.interp(-np.asarray(distance), reversed_q, grid, left=0.0, right=100.0)
    return 100.0 - (below + above) / 2.0
