"""A map of the collection: every code projected to two dimensions, and the top-level folder it came from.

PCA by default: exact, deterministic and a fraction of a second at 100,000 codes of 30 numbers. UMAP keeps local
neighbourhoods better (clusters stand apart) but takes minutes and the optional extra `pip install .[map]`; it is
imported only when asked for.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("pca", "umap")
DEFAULT_METHOD = "pca"


class ProjectionUnavailable(RuntimeError):
    """The projection asked for needs an optional package that is not installed."""


@dataclass(frozen=True)
class CollectionMap:
    """Points of a map: one per image, with its group (top-level folder) as an index into `groups`."""

    ids: np.ndarray  # (n,) int64
    xy: np.ndarray  # (n, 2) float32, each axis scaled to [0, 1]
    group: np.ndarray  # (n,) int32 index into groups
    groups: list[str]  # top-level folder names ("" for images at the top of the collection), most images first
    method: str
    generation: int


def umap_available() -> bool:
    """Whether the optional UMAP extra is installed."""
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def project(codes: np.ndarray, method: str = DEFAULT_METHOD, seed: int = 0) -> np.ndarray:
    """(n, d) codes -> (n, 2) float32 positions, each axis scaled to [0, 1]."""
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}: expected one of {', '.join(METHODS)}")
    codes = np.asarray(codes, np.float64)
    if len(codes) == 0:
        return np.zeros((0, 2), np.float32)
    if method == "umap" and len(codes) >= 16:  # fewer points than UMAP's neighbourhood: PCA says as much
        if not umap_available():
            raise ProjectionUnavailable("the UMAP map needs the optional extra: pip install 'lookalike[map]' "
                                        "(or pip install -r requirements-map.txt)")
        import umap

        # One job: a seeded UMAP runs single-threaded anyway (and says so in a warning when asked for more).
        xy = umap.UMAP(n_components=2, n_neighbors=min(15, len(codes) - 1), random_state=seed,
                       n_jobs=1).fit_transform(codes)
    else:
        centred = codes - codes.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: principal axes, strongest first
        axes = vt[:2] if len(vt) >= 2 else np.vstack([vt, np.zeros((2 - len(vt), codes.shape[1]))])
        xy = centred @ axes.T  # (n, 2)
        xy *= np.sign(xy[np.abs(xy).argmax(axis=0), [0, 1]] + 1e-30)  # a sign fixed by the data, not by LAPACK
    low, high = xy.min(axis=0), xy.max(axis=0)
    return ((xy - low) / np.where(high > low, high - low, 1.0)).astype(np.float32)


def folder_groups(relpaths: list[str]) -> tuple[np.ndarray, list[str]]:
    """(n,) group index of each path's top-level folder, and the folder names, most images first."""
    tops = [p.split("/", 1)[0] if "/" in p else "" for p in relpaths]
    names, inverse, counts = np.unique(np.asarray(tops, dtype=object), return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")  # most images first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse].astype(np.int32), [str(names[i]) for i in order]
