"""Near-duplicates: groups of images whose codes are far closer than ordinary nearest neighbours are.

The codes are trained to stay put under everyday edits (a crop, a cover-up, a re-encode, a resize, a brighter
copy), so an edited copy sits much nearer its original than any other image does. Groups are the connected
components of the neighbour graph (indexer.neighbours) cut at a distance threshold: an edge joins two images
closer than the threshold, and a chain of such edges makes one group.

The suggested threshold is measured on the collection itself. Edited copies of a sample of its own images (mild
everyday edits: a small crop, a re-encode, a resize, a brightness change, a small cover-up; `COPY_EDITS`) are
encoded, and their distances to their originals say how far a copy strays. The threshold is the distance that best
tells those copies from the collection's ordinary nearest-neighbour pairs: where the share of copies within it
most exceeds the share of images whose nearest neighbour is within it (the two-sample Kolmogorov-Smirnov point),
capped where more than MAX_JOINED of the images would be grouped with their nearest neighbour: copies are rare
in a collection, so a threshold that takes in most of them but also joins a fifth of all neighbour pairs would
bury them among look-alikes (a model whose codes move much under edits does that).
Without that measurement (no images to sample), the suggestion falls back to the widest gap in the low tail of
the first-neighbour distances, or a small share of their median.

A chain of similar pictures (each a little different from the last) must not become one group: within a connected
component, every member must lie within the threshold of the group's first image; the rest start groups of
their own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.neighbours import NeighbourGraph

# Mild edits, the kind a near-duplicate has (encoder.augment.EditStrengths fields); stronger ones make a variant.
COPY_EDITS = dict(crop=0.5, crop_min=0.85, flip=0.0, colour=0.5, brightness=0.15, contrast=0.15, saturation=0.15,
                  grey=0.0, resize=0.5, resize_min=0.5, jpeg=0.5, jpeg_quality=(40, 90), occlusion=0.25,
                  occlusion_max=0.3, noise=0.2, noise_max=0.03)
COPY_SAMPLE = 256  # images whose edited copies are measured
MAX_JOINED = 0.03  # the suggested threshold groups at most this share of the images with their nearest neighbour
FLOOR_SHARE = 0.05  # without a gap: group pairs closer than this share of the median nearest-neighbour distance
LOW_TAIL = 0.5  # the gap is looked for among nearest-neighbour distances below this share of the median ...
MIN_GAP = np.log(2.0)  # ... must span at least a factor of two ...
GAP_BELOW = 0.25  # ... and have below it only distances under this share of the median


@dataclass(frozen=True)
class Group:
    """One group of near-duplicates: members as (id, distance to the first), the first being the lowest id."""

    members: list[tuple[int, float]]

    @property
    def spread(self) -> float:
        """The largest member's distance to the first: how far apart the group goes."""
        return max(d for _, d in self.members)


def parse_threshold(raw: str) -> float | None:
    """'auto' (None: the suggested threshold) or a finite distance of 0 or more; raises ValueError otherwise."""
    if raw in ("", "auto"):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise ValueError("expected 'auto' or a distance of 0 or more")
    return value


def suggest_threshold(nearest: np.ndarray, copy_distances: np.ndarray | None = None) -> float:
    """A distance threshold for duplicates (see the module's docstring); 0.0 for fewer than two images.

    nearest: (n,) first-neighbour distances; copy_distances: (m,) distances of edited copies to their originals.
    """
    nearest = np.sort(np.asarray(nearest, np.float64))
    if copy_distances is not None and len(copy_distances) and len(nearest) >= 2:
        copies = np.sort(np.asarray(copy_distances, np.float64))
        candidates = np.unique(np.concatenate([copies, nearest]))  # (c,) every distance where a share changes
        separation = (np.searchsorted(copies, candidates, "right") / len(copies)
                      - np.searchsorted(nearest, candidates, "right") / len(nearest))  # (c,)
        return float(min(candidates[int(np.argmax(separation))], np.quantile(nearest, MAX_JOINED)))
    if len(nearest) < 2:
        return 0.0
    median = float(np.median(nearest))
    floor = FLOOR_SHARE * median
    positive = nearest[nearest > 0]
    # The low tail, and the first distance above it: the gap may end there when ordinary neighbours bunch up.
    low = np.log(positive[: np.searchsorted(positive, LOW_TAIL * median, "right") + 1])
    if len(low) >= 2:
        gaps = np.diff(low)  # (m - 1,) in log units: the factor between consecutive distances
        widest = int(np.argmax(gaps))
        # A gap counts when it spans a factor of two and what lies below it is clearly closer than usual.
        if gaps[widest] >= MIN_GAP and low[widest] <= np.log(GAP_BELOW * median):
            return float(np.exp((low[widest] + low[widest + 1]) / 2.0))  # the geometric middle of the gap
    return float(floor)


def duplicate_groups(graph: NeighbourGraph, codes_by_id: dict[int, np.ndarray], threshold: float) -> list[Group]:
    """Connected components of the graph's edges shorter than or equal to `threshold`, largest group first."""
    rows, cols = np.nonzero((graph.distances <= threshold) & (graph.neighbours >= 0))
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])  # halve the path as we go
            i = parent[i]
        return i

    for a, b in zip(graph.ids[rows].tolist(), graph.neighbours[rows, cols].tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the lowest id leads: usually the original, indexed first
    components: dict[int, list[int]] = {}
    for i in list(parent):  # every image joined to another; a component's root is only ever a parent
        lead = root(i)
        components.setdefault(lead, [lead]).append(i)
    groups = []
    for ids in components.values():
        rest = sorted(set(ids))
        while len(rest) >= 2:  # a star around the lowest id; what is out of its reach starts over
            first = codes_by_id[rest[0]]
            distances = [float(np.linalg.norm(codes_by_id[i] - first)) for i in rest]
            near = [(i, d) for i, d in zip(rest, distances) if d <= threshold]
            if len(near) >= 2:
                groups.append(Group(near))
            rest = [i for i, d in zip(rest, distances) if d > threshold] if len(near) >= 2 else rest[1:]
    groups.sort(key=lambda g: (-len(g.members), g.spread, g.members[0][0]))
    return groups
