"""Retrieval quality by label agreement: exact k-NN (L2 or cosine), precision@k, mAP@k, corrupted-copy recall@1.

Array conventions as in faiss `contrib/`: float32 `(n, d)` vectors, `xb` the indexed ones, `xq` the queries, results
`(D, I)` with `I` row numbers into `xb` (-1 pads). Labels are any hashable values; a neighbour is relevant when its
label equals the query's. FAISS is imported inside the functions, so importing this module stays light.

Average precision at k (the normaliser is the one thing that differs between papers, so it is fixed here):

    AP@k = sum_{i=1..k} P@i * rel_i / min(k, R)

where rel_i is 1 when the i-th neighbour shares the query's label, P@i is the share of relevant items among the first
i, and R is the number of items in the index that share the query's label (the query itself not counted when it is
left out). A perfect ranking scores 1 whether or not R exceeds k. A query with R = 0 scores AP 0 (and P@k 0): it is
kept in the mean rather than silently dropped. mAP@k is the mean of AP@k over the queries.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METRICS = ("l2", "cosine")
MAP_K = 100  # mAP is reported over each query's top 100


class EvaluationError(ValueError):
    """A collection that cannot be scored by label (e.g. fewer than two labelled sub-folders); one-line reason."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32 (n, d)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    return x / np.maximum(norms, np.float32(1e-12))


def knn(xb: np.ndarray, xq: np.ndarray, k: int, metric: str = "l2",
        leave_one_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `xb` for each row of `xq`: (D, I), each (nq, k), nearest first.

    metric "l2": IndexFlatL2, D squared Euclidean distances (ascending). metric "cosine": IndexFlatIP on
    L2-normalised copies, D cosine similarities (descending) — the same ranking as L2 on normalised vectors.
    leave_one_out: `xq` is `xb` itself and each query's own row is removed from its list (a duplicate image stays).
    """
    import faiss

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(f"xb {xb.shape} and xq {xq.shape} must be (n, d) with the same d")
    if leave_one_out and xq.shape[0] != xb.shape[0]:
        raise ValueError("leave_one_out needs xq to be xb itself")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if metric == "cosine":
        xb, xq = l2_normalise(xb), l2_normalise(xq)
        index: faiss.IndexFlat = faiss.IndexFlatIP(xb.shape[1])
    else:
        index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    D, I = index.search(xq, k + 1 if leave_one_out else k)  # (nq, k[+1])
    if not leave_one_out:
        return D, I
    # Drop each query's own row; where ties pushed it past k + 1, drop the last entry instead.
    own = I == np.arange(len(xq))[:, None]  # (nq, k + 1)
    own[~own.any(axis=1), -1] = True
    own &= np.cumsum(own, axis=1) == 1  # only the first match, should a row id ever repeat
    keep = ~own
    return D[keep].reshape(len(xq), k), I[keep].reshape(len(xq), k)


def encode_labels(*label_arrays: Sequence) -> list[np.ndarray]:
    """Map labels of any type to int64 codes, consistently across the arrays given."""
    arrays = [np.asarray(a) for a in label_arrays]
    _, inverse = np.unique(np.concatenate([a.astype(str) if a.dtype.kind in "OUS" else a for a in arrays]),
                           return_inverse=True)
    out, start = [], 0
    for a in arrays:
        out.append(inverse[start : start + len(a)].astype(np.int64))
        start += len(a)
    return out


def neighbour_labels(index_labels: np.ndarray, I: np.ndarray) -> np.ndarray:
    """Labels (int codes) of the neighbours in I, (nq, k); a padded slot (-1) gets -1, which matches nothing."""
    index_labels = np.asarray(index_labels, dtype=np.int64)
    return np.where(I >= 0, index_labels[np.maximum(I, 0)], -1)


def relevance(query_labels: np.ndarray, neighbour_labels: np.ndarray) -> np.ndarray:
    """(nq, k) bool: the neighbour shares the query's label."""
    query_labels = np.asarray(query_labels)
    neighbour_labels = np.asarray(neighbour_labels)
    if neighbour_labels.ndim != 2 or len(query_labels) != len(neighbour_labels):
        raise ValueError(f"query labels {query_labels.shape} and neighbour labels {neighbour_labels.shape} "
                         "must be (nq,) and (nq, k)")
    return neighbour_labels == query_labels[:, None]


def precision_at_k(query_labels: np.ndarray, neighbour_labels: np.ndarray, per_query: bool = False):
    """Mean share of each query's k neighbours (the columns given) that share its label; (nq,) if per_query."""
    rel = relevance(query_labels, neighbour_labels)
    scores = rel.mean(axis=1) if rel.shape[1] else np.zeros(len(rel))
    return scores if per_query else float(scores.mean()) if len(scores) else 0.0


def relevant_counts(query_labels: np.ndarray, index_labels: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """R per query: how many index items share its label (minus the query itself when it is left out), (nq,)."""
    values, counts = np.unique(np.asarray(index_labels), return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist()))
    r = np.array([lookup.get(q, 0) for q in np.asarray(query_labels).tolist()], dtype=np.int64)
    return np.maximum(r - 1, 0) if leave_one_out else r


def average_precision_at_k(query_labels: np.ndarray, neighbour_labels: np.ndarray,
                           n_relevant: np.ndarray) -> np.ndarray:
    """AP@k per query, (nq,) float64, k = the number of columns: sum_i P@i * rel_i / min(k, R); 0 when R = 0."""
    rel = relevance(query_labels, neighbour_labels).astype(np.float64)  # (nq, k)
    k = rel.shape[1]
    hits = np.cumsum(rel, axis=1)  # relevant among the first i
    precision_at_i = hits / np.arange(1, k + 1)  # (nq, k)
    normaliser = np.minimum(k, np.asarray(n_relevant, dtype=np.float64))  # (nq,)
    total = (precision_at_i * rel).sum(axis=1)
    return np.divide(total, normaliser, out=np.zeros_like(total), where=normaliser > 0)


def mean_average_precision(query_labels: np.ndarray, neighbour_labels: np.ndarray, n_relevant: np.ndarray) -> float:
    """mAP@k: the mean of AP@k over the queries (see the module docstring for the normaliser)."""
    ap = average_precision_at_k(query_labels, neighbour_labels, n_relevant)
    return float(ap.mean()) if len(ap) else 0.0


def recall_at_1(I: np.ndarray, expected: np.ndarray) -> float:
    """Share of queries whose first neighbour is the expected row (e.g. the clean original of a corrupted copy)."""
    I = np.asarray(I)
    return float((I[:, 0] == np.asarray(expected)).mean()) if len(I) else 0.0


def copy_recall_at_1(xb: np.ndarray, xq: np.ndarray, expected: np.ndarray | None = None, metric: str = "l2",
                     block: int = 1024) -> float:
    """Share of queries whose nearest row of `xb` is the expected one (default: row i for query i), ties shared.

    When several rows are exactly as near as the expected one, it counts 1/ties: the mean over a random order of
    the tied rows. Binary hashes compared by Hamming distance tie often; real-valued codes almost never do, so all
    methods are scored alike. Exact distances, computed in blocks of queries.
    """
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if metric == "cosine":
        xb, xq = l2_normalise(xb), l2_normalise(xq)
    elif metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    expected = np.arange(len(xq)) if expected is None else np.asarray(expected)
    norms = np.square(xb).sum(axis=1)  # (nb,)
    binary = bool(np.all((xb == 0) | (xb == 1)))  # hashes: integer distances, so ties are exact
    total = 0.0
    for start in range(0, len(xq), block):
        q = xq[start : start + block]  # (m, d)
        d = norms[None, :] - 2.0 * (q @ xb.T)  # (m, nb): squared L2 up to the query's own norm
        if binary:
            d = np.round(d)
        own = d[np.arange(len(q)), expected[start : start + block]]
        nearest = d.min(axis=1)
        ties = (d <= nearest[:, None]).sum(axis=1)
        total += float(np.where(own <= nearest, 1.0 / ties, 0.0).sum())
    return total / len(xq) if len(xq) else 0.0


def evaluate(xb: np.ndarray, index_labels: Sequence, xq: np.ndarray | None = None,
             query_labels: Sequence | None = None, k: int = 10, map_k: int = MAP_K, metric: str = "l2",
             leave_one_out: bool = False) -> dict[str, Any]:
    """Precision@k and mAP@map_k of queries against an index, by label agreement, from one exact search.

    With `xq` None the index is evaluated against itself, leaving each query out of its own list. k and map_k are
    capped at the number of candidates; the values used are returned. Also returns the per-query precision@k and
    AP (numpy arrays) for callers that break results down, under "per_query".
    """
    if xq is None:
        xq, query_labels, leave_one_out = xb, index_labels, True
    if query_labels is None or len(query_labels) != len(xq) or len(index_labels) != len(xb):
        raise ValueError("every indexed and every query vector needs a label")
    candidates = len(xb) - (1 if leave_one_out else 0)
    if candidates < 1:
        raise ValueError("the index has no candidates to rank")
    k, map_k = min(k, candidates), min(map_k, candidates)
    index_codes, query_codes = encode_labels(index_labels, query_labels)
    _, I = knn(xb, xq, max(k, map_k), metric=metric, leave_one_out=leave_one_out)
    found = neighbour_labels(index_codes, I)  # (nq, max(k, map_k))
    precision = precision_at_k(query_codes, found[:, :k], per_query=True)
    ap = average_precision_at_k(query_codes, found[:, :map_k],
                                relevant_counts(query_codes, index_codes, leave_one_out))
    return {"metric": metric, "k": k, "map_k": map_k, "queries": len(xq),
            "precision_at_k": float(precision.mean()), "map_at_k": float(ap.mean()),
            "per_query": {"precision_at_k": precision, "ap": ap}}


def collection_labels(relpaths: Sequence[str]) -> list[str | None]:
    """The label of each catalogued path: its first folder ('cats/a.jpg' and 'cats/x/b.jpg' -> 'cats'), else None."""
    return [p.split("/", 1)[0] if "/" in p else None for p in relpaths]


def evaluate_collection(index_dir: str | os.PathLike, k: int = 10, metric: str = "l2") -> dict[str, Any]:
    """Score a built collection whose sub-folders are its labels, each image querying all the others.

    Reads the codes the catalogue holds (no model is run). Images at the top level have no label: they are left
    out entirely, neither queries nor candidates, since whether they would be a right answer is unknown. L2 is
    what the service ranks by; cosine is there to measure an alternative.
    """
    from encoder.store import read_info
    from indexer.catalog import Catalog

    info = read_info(index_dir)
    with Catalog(index_dir, readonly=True) as catalog:
        relpaths = catalog.relpaths()
        _, codes = catalog.all_codes(int(info["code_size"]))  # the same id order
    labels = collection_labels(relpaths)
    labelled = np.array([label is not None for label in labels], dtype=bool)
    scored = [label for label in labels if label is not None]
    counts = Counter(scored)
    if len(counts) < 2:
        raise EvaluationError(
            f"{index_dir} has {len(counts)} labelled sub-folder{'s' if len(counts) != 1 else ''} "
            f"({len(scored)} of {len(relpaths)} images in sub-folders); scoring needs images in at least 2 "
            "sub-folders, whose names are the labels")
    result = evaluate(codes[labelled], scored, k=k, metric=metric)
    per_query = result.pop("per_query")
    labels_arr = np.array(scored, dtype=object)
    per_label = {}
    for label in sorted(counts):
        rows = labels_arr == label
        per_label[label] = {"images": counts[label],
                            "precision_at_k": round(float(per_query["precision_at_k"][rows].mean()), 4),
                            "map_at_k": round(float(per_query["ap"][rows].mean()), 4)}
    log.debug("scored %d images in %d labels; %d at the top level left out", len(scored), len(counts),
             len(relpaths) - len(scored))
    return {
        "index": str(os.path.abspath(index_dir)),
        "model": f"sha256:{info['sha256']}",
        "metric": result["metric"],
        "k": result["k"],
        "precision_at_k": round(result["precision_at_k"], 4),
        "map_k": result["map_k"],
        "map_at_k": round(result["map_at_k"], 4),
        "images": len(relpaths),
        "images_scored": len(scored),
        "unlabelled": len(relpaths) - len(scored),
        "labels": len(counts),
        "singleton_labels": sum(1 for c in counts.values() if c == 1),
        "per_label": per_label,
    }
