"""Near-duplicates: groups of images that are edited copies of one another (re-encodes, resizes, crops, a caption).

Two stages, so that a large collection never compares all pairs and a copy is never confused with a look-alike:

1. **Candidates from the codes.** Every image's nearest neighbours come from the vector index (indexer.neighbours).
   A neighbour is a candidate when its code lies within the code limit (`--threshold`; suggested from how far the
   codes of edited copies of the collection's own images stray: their 99th percentile), and its stored 16x16
   sketch (indexer.copies) is far closer than the image's ordinary neighbours' sketches are (a ratio test against
   the RATIO_RANK-th closest sketch among its neighbours, each sketch compared over small crops of either one: a
   copy stands out, a look-alike does not; the test is looser for an image's nearest code, where a copy usually is).
   Files catalogued with the same sha256 are candidates whatever their neighbours.
2. **The pixel check** (indexer.pixelcheck) decodes both images of each candidate pair again and compares their
   aligned detail; a pair is a copy when the score reaches MATCH_THRESHOLD. Byte-identical files need no check.
   Codes and sketches alone cannot make this call: two studio photos of one motorbike model are as close in code
   as a copy with a caption, and only the pixels tell them apart.

Groups are the connected components of the confirmed pairs, cut into stars: every member is a confirmed copy of
the group's first image (the lowest id, usually the original), so a chain of look-alikes never becomes one group.

`check="none"` groups by code distance alone (look-alikes too: bursts, re-shoots), as components of the neighbour
pairs within the threshold; its suggested threshold is the distance that best tells measured copies from ordinary
nearest neighbours (the two-sample Kolmogorov-Smirnov point), capped where more than MAX_JOINED of the images
would be grouped with their nearest neighbour. Without measured copies it falls back to the widest gap in the low
tail of the first-neighbour distances, or a small share of their median.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from indexer.copies import crop_tolerant_distances
from indexer.neighbours import NeighbourGraph

# Mild edits, the kind a near-duplicate has (encoder.augment.EditStrengths fields); stronger ones make a variant.
COPY_EDITS = dict(crop=0.5, crop_min=0.8, flip=0.0, colour=0.5, brightness=0.15, contrast=0.15, saturation=0.15,
                  grey=0.0, resize=0.5, resize_min=0.5, jpeg=0.5, jpeg_quality=(40, 90), occlusion=0.25,
                  occlusion_max=0.3, noise=0.2, noise_max=0.03)
COPY_SAMPLE = 256  # images whose edited copies are measured
MAX_JOINED = 0.03  # the suggested threshold groups at most this share of the images with their nearest neighbour
FLOOR_SHARE = 0.05  # without a gap: group pairs closer than this share of the median nearest-neighbour distance
LOW_TAIL = 0.5  # the gap is looked for among nearest-neighbour distances below this share of the median ...
MIN_GAP = np.log(2.0)  # ... must span at least a factor of two ...
GAP_BELOW = 0.25  # ... and have below it only distances under this share of the median
CHECKS = ("pixels", "none")  # how candidate pairs are confirmed: the pixel check, or not at all (codes only) ...
DEFAULT_CHECK = CHECKS[0]  # ... the pixel check unless asked otherwise
COPY_REACH = 0.99  # the suggested code limit of the pixel-checked mode: this quantile of measured copies' distances
RATIO_RANK = 6  # a candidate's sketch distance is compared with the 6th closest among the image's neighbours ...
CANDIDATE_RATIO = 0.35  # ... and must be below this share of it (so up to five copies of one image all pass) ...
NEAREST_RATIO = 0.55  # ... or below this share for the image's nearest code (where a copy usually is)
MATCH_THRESHOLD = 0.95  # pixel-check score (indexer.pixelcheck) from which a pair is an edited copy


@dataclass(frozen=True)
class Group:
    """One group of near-duplicates: members as (id, code distance to the first), the first being the lowest id;
    with the pixel check, each later member's score against the first in `matches`."""

    members: list[tuple[int, float]]
    matches: dict[int, float] = field(default_factory=dict)

    @property
    def spread(self) -> float:
        """The largest member's distance to the first: how far apart the group goes."""
        return max(d for _, d in self.members)


@dataclass(frozen=True)
class Duplicates:
    """The near-duplicates of a collection at one threshold, and how they were found."""

    groups: list[Group]
    threshold: float  # the code distance used
    suggested: float  # the code distance suggested for this check
    check: str  # "pixels" or "none" (CHECKS)
    pairs_checked: int = 0  # candidate pairs compared by the pixel check
    unreadable: int = 0  # images of candidate pairs whose files could not be read (their pairs are not grouped)


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
    """Connected components of the graph's edges shorter than or equal to `threshold`, cut into stars (every member
    within the threshold of the group's first image), largest group first."""
    rows, cols = np.nonzero((graph.distances <= threshold) & (graph.neighbours >= 0))
    edges = zip(graph.ids[rows].tolist(), graph.neighbours[rows, cols].tolist())

    def distance(a: int, b: int) -> float:
        return float(np.linalg.norm(codes_by_id[a] - codes_by_id[b]))

    stars = (star for ids in _components(edges) for star in _stars(ids, lambda a, b: distance(a, b) <= threshold))
    return _largest_first([Group([(first, 0.0)] + [(i, distance(first, i)) for i in near]) for first, near in stars])


def parse_check(raw: str) -> str:
    """One of CHECKS ('' for DEFAULT_CHECK); raises ValueError otherwise."""
    if raw in ("", *CHECKS):
        return raw or DEFAULT_CHECK
    raise ValueError(f"expected {' or '.join(repr(c) for c in CHECKS)}")


def code_limit(nearest: np.ndarray, copy_distances: np.ndarray | None) -> float:
    """The suggested code limit of candidate pairs: how far edited copies' codes stray (their COPY_REACH quantile);
    the median first-neighbour distance without measured copies."""
    if copy_distances is not None and len(copy_distances):
        return float(np.quantile(np.asarray(copy_distances, np.float64), COPY_REACH))
    return float(np.median(nearest)) if len(nearest) else 0.0


def candidate_pairs(graph: NeighbourGraph, sketches_by_id: dict[int, np.ndarray], limit: float) -> set[tuple[int, int]]:
    """(lower id, higher id) pairs worth a pixel check: graph neighbours within `limit` whose sketch passes the ratio
    test (see the module's docstring). Images without a sketch (catalogued before sketches) pass on the code alone."""
    pairs: set[tuple[int, int]] = set()
    for row, own in enumerate(graph.ids.tolist()):
        near = (graph.neighbours[row] >= 0) & (graph.distances[row] <= limit)
        if not near.any():
            continue
        neighbours = graph.neighbours[row][graph.neighbours[row] >= 0]  # (m,) all of its neighbours, for the ratio
        mine = sketches_by_id.get(own)
        known = [j for j in neighbours.tolist() if j in sketches_by_id]
        if mine is None or len(known) < 2:
            chosen = graph.neighbours[row][near].tolist()
        else:
            distances = dict(zip(known, crop_tolerant_distances(mine, np.stack([sketches_by_id[j] for j in known]))))
            reference = np.sort(list(distances.values()))[min(RATIO_RANK, len(distances)) - 1]
            chosen = [j for j in graph.neighbours[row][near].tolist() if j not in distances
                      or distances[j] < (NEAREST_RATIO if j == neighbours[0] else CANDIDATE_RATIO) * reference]
        pairs.update((min(own, j), max(own, j)) for j in chosen)
    return pairs


def checked_groups(pairs: Iterable[tuple[int, int]], score: Callable[[int, int], float | None],
                   codes_by_id: dict[int, np.ndarray], threshold: float = MATCH_THRESHOLD) -> list[Group]:
    """Groups of confirmed copies, largest first: components of the `pairs` whose `score(a, b)` (None: could not be
    checked) reaches `threshold`, cut into stars around their lowest id (every member confirmed against it)."""

    def confirmed(a: int, b: int) -> bool:
        found = score(a, b)
        return found is not None and found >= threshold

    groups = []
    for ids in _components((a, b) for a, b in pairs if confirmed(a, b)):
        for first, near in _stars(ids, confirmed):
            members = [(first, 0.0)] + [(i, float(np.linalg.norm(codes_by_id[i] - codes_by_id[first]))) for i in near]
            groups.append(Group(members, {i: float(score(first, i) or 0.0) for i in near}))
    return _largest_first(groups)


def _stars(component: Iterable[int], close: Callable[[int, int], bool]) -> list[tuple[int, list[int]]]:
    """A component cut into stars, (first, members close to it), around its lowest id; the members out of the
    first's reach start over among themselves. So a chain of look-alikes never becomes one group."""
    rest, stars = sorted(set(component)), []
    while len(rest) >= 2:
        first, others = rest[0], rest[1:]
        near = [i for i in others if close(first, i)]
        if near:
            stars.append((first, near))
        taken = set(near)
        rest = [i for i in others if i not in taken]
    return stars


def _largest_first(groups: list[Group]) -> list[Group]:
    """Largest group first; among equals the tighter, then the one with the lower first id."""
    return sorted(groups, key=lambda g: (-len(g.members), g.spread, g.members[0][0]))


def _components(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (of two or more ids) of an undirected graph given by its edges."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])  # halve the path as we go
            i = parent[i]
        return i

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the lowest id leads: usually the original, indexed first
    components: dict[int, list[int]] = {}
    for i in list(parent):  # every image joined to another; a component's root is only ever a parent
        lead = root(i)
        components.setdefault(lead, [lead]).append(i)
    return list(components.values())
