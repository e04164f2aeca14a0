"""Retrieval metrics of indexer.evaluate on hand-made label sets and crafted vectors, with hand-computed answers."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.evaluate import (
    average_precision_at_k,
    evaluate,
    knn,
    mean_average_precision,
    precision_at_k,
    recall_at_1,
    relevant_counts,
)


def test_precision_at_k_perfect_mixed_and_none():
    queries = np.array([0, 1, 2])
    neighbours = np.array([[0, 0, 0, 0],    # all right: 1
                           [1, 0, 1, 0],    # half: 0.5
                           [0, 1, 0, 1]])   # none: 0
    assert precision_at_k(queries, neighbours, per_query=True).tolist() == [1.0, 0.5, 0.0]
    assert precision_at_k(queries, neighbours) == pytest.approx(0.5)
    assert precision_at_k(np.array(["cat"]), np.array([["cat", "dog"]])) == 0.5  # labels of any type


def test_average_precision_hand_computed():
    # Relevance 1 0 1 0 1 with R = 3 relevant in the index: (1/1 + 2/3 + 3/5) / min(5, 3) = 0.7556
    rel = np.array([[1, 0, 1, 0, 1]])
    ap = average_precision_at_k(np.array([1]), rel, np.array([3]))
    assert ap[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # The same list when the index holds 10 relevant items: the normaliser is min(k, R) = 5.
    assert average_precision_at_k(np.array([1]), rel, np.array([10]))[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 5)


def test_average_precision_perfect_empty_and_no_relevant():
    queries = np.array([7, 7, 7])
    lists = np.array([[7, 7, 3],     # both relevant items first, R = 2 -> 1.0
                      [3, 3, 3],     # none found -> 0
                      [3, 7, 7]])    # R = 0: nothing could be found -> 0 by definition
    ap = average_precision_at_k(queries, lists, np.array([2, 2, 0]))
    assert ap.tolist() == [1.0, 0.0, 0.0]
    all_right = np.array([[7, 7, 7]])
    assert mean_average_precision(queries[:1], all_right, np.array([50])) == 1.0  # perfect with R > k is still 1


def test_relevant_counts_with_and_without_leave_one_out():
    index = np.array([0, 0, 0, 1, 1, 2])
    assert relevant_counts(np.array([0, 1, 2, 3]), index).tolist() == [3, 2, 1, 0]
    assert relevant_counts(index, index, leave_one_out=True).tolist() == [2, 2, 2, 1, 1, 0]


def test_knn_l2_and_leave_one_out():
    xb = np.array([[0, 0], [1, 0], [5, 0], [5.5, 0]], dtype=np.float32)
    D, I = knn(xb, np.array([[0.9, 0]], dtype=np.float32), 2)
    assert I.tolist() == [[1, 0]] and D[0] == pytest.approx([0.01, 0.81])  # squared distances
    _, I = knn(xb, xb, 1, leave_one_out=True)
    assert I[:, 0].tolist() == [1, 0, 3, 2]  # nobody is its own neighbour


def test_leave_one_out_drops_only_the_query_among_exact_duplicates():
    xb = np.zeros((3, 2), dtype=np.float32)  # three identical vectors: the ties can come back in any order
    _, I = knn(xb, xb, 2, leave_one_out=True)
    for row, ids in enumerate(I.tolist()):
        assert sorted(ids) == sorted({0, 1, 2} - {row})


def test_cosine_ranks_by_angle_where_l2_ranks_by_length():
    # The query points along x. B is close in Euclidean terms but at 45 degrees; A is far away on the same axis.
    xb = np.array([[10.0, 0.0],    # A: same direction, long
                   [1.0, 1.0]],    # B: nearer, other direction
                  dtype=np.float32)
    xq = np.array([[1.0, 0.0]], dtype=np.float32)
    _, by_l2 = knn(xb, xq, 2, metric="l2")
    sims, by_cos = knn(xb, xq, 2, metric="cosine")
    assert by_l2[0].tolist() == [1, 0]
    assert by_cos[0].tolist() == [0, 1]
    assert sims[0] == pytest.approx([1.0, np.sqrt(0.5)], abs=1e-6)  # cosine similarities, descending
    with pytest.raises(ValueError):
        knn(xb, xq, 1, metric="manhattan")


def test_evaluate_on_separated_clusters_and_on_overlapping_ones():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])
    labels = np.repeat(["a", "b", "c"], 20)
    xb = (centres[np.repeat(np.arange(3), 20)] + rng.normal(size=(60, 3))).astype(np.float32)
    result = evaluate(xb, labels, k=10)  # the index against itself, each query left out
    assert result["precision_at_k"] == 1.0 and result["map_at_k"] == 1.0
    assert result["k"] == 10 and result["map_k"] == 59  # mAP's 100 capped at the 59 candidates
    queries = (centres[[0, 1, 2]] + 0.1).astype(np.float32)
    held_out = evaluate(xb, labels, queries, ["a", "b", "c"], k=5, metric="cosine")
    assert held_out["queries"] == 3 and held_out["precision_at_k"] >= 0.6  # cosine blurs the cluster at the origin
    noise = evaluate(rng.normal(size=(60, 3)).astype(np.float32), labels, k=10)
    assert noise["precision_at_k"] < 0.6  # chance is about 1/3


def test_recall_at_1():
    assert recall_at_1(np.array([[0, 5], [9, 1], [2, 2]]), np.arange(3)) == pytest.approx(2 / 3)
