"""The neighbour graph, the percentile scale, near-duplicate groups and the map's projection, on real FAISS."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.duplicates import FLOOR_SHARE, MAX_JOINED, duplicate_groups, suggest_threshold
from indexer.live import LiveVectors
from indexer.neighbours import distance_quantiles, neighbour_graph, percentile
from indexer.projection import ProjectionUnavailable, folder_groups, project, umap_available
from indexer.vectors import VectorIndex

D = 8


def collection_with_copies(n: int = 500, copies: int = 20, seed: int = 0, exact_limit: int = 100_000):
    """n random codes (typical nearest-neighbour distance ~2) plus `copies` near-copies of the first ones."""
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((n, D)).astype(np.float32)
    near = codes[:copies] + rng.normal(0, 0.01, (copies, D)).astype(np.float32)  # distance ~0.03
    all_codes = np.concatenate([codes, near])
    ids = np.arange(1, len(all_codes) + 1, dtype=np.int64)
    return ids, all_codes, VectorIndex.build(ids, all_codes, generation=1, exact_limit=exact_limit)


@pytest.mark.parametrize("exact_limit", [100_000, 100], ids=["exact", "ivf"])
def test_the_graph_leaves_each_image_out_of_its_own_neighbours(exact_limit):
    ids, codes, vectors = collection_with_copies(exact_limit=exact_limit)
    graph = neighbour_graph(vectors, ids, codes, k=5)
    assert graph.neighbours.shape == (len(ids), 5)
    assert not (graph.neighbours == ids[:, None]).any()
    assert (np.diff(graph.distances, axis=1) >= -1e-6).all()  # nearest first
    # Each near-copy's nearest neighbour is its original, and the other way round.
    assert (graph.neighbours[500:, 0] == ids[:20]).all() and (graph.neighbours[:20, 0] == ids[500:]).all()
    brute = np.sort(np.linalg.norm(codes[:, None] - codes[None], axis=2) + np.eye(len(codes)) * 1e9, axis=1)[:, 0]
    np.testing.assert_allclose(graph.nearest, brute, rtol=1e-4, atol=1e-5)


def test_identical_codes_are_each_others_neighbours_whatever_order_faiss_returns():
    codes = np.zeros((3, D), np.float32)  # three exact copies: every distance 0, ties everywhere
    ids = np.array([7, 8, 9])
    graph = neighbour_graph(VectorIndex.build(ids, codes, 1), ids, codes, k=2)
    for row, own in enumerate(ids):
        assert sorted(graph.neighbours[row]) == sorted(set(ids) - {own})
    assert (graph.distances == 0).all()


def test_a_tiny_collection_pads_the_graph():
    ids, codes = np.array([1, 2]), np.eye(2, D, dtype=np.float32)
    graph = neighbour_graph(VectorIndex.build(ids, codes, 1), ids, codes, k=3)
    assert (graph.neighbours[:, 1:] == -1).all() and np.isinf(graph.distances[:, 1:]).all()
    assert list(graph.neighbours[:, 0]) == [2, 1] and len(graph.nearest) == 2


def test_percentile_reads_as_the_share_of_nearest_neighbour_pairs_further_apart():
    nearest = np.linspace(1.0, 2.0, 1001)
    scale = np.asarray(distance_quantiles(nearest))
    assert percentile(0.5, scale) == 100.0 and percentile(3.0, scale) == 0.0
    assert percentile(1.5, scale) == pytest.approx(50.0, abs=0.2)
    assert percentile(1.1, scale) == pytest.approx(90.0, abs=0.2)
    assert list(np.round(percentile(np.array([1.1, 1.9]), scale), 0)) == [90.0, 10.0]
    # Ties: a collection where a fifth of the images are exact copies (distance 0) puts 0 in the middle of them.
    tied = np.asarray(distance_quantiles(np.concatenate([np.zeros(200), np.linspace(1, 2, 800)])))
    assert percentile(0.0, tied) == pytest.approx(90.0, abs=0.5)
    assert percentile(1.0, np.array([])) == 50.0 and distance_quantiles(np.array([1.0])) == []


def test_the_suggested_threshold_falls_in_the_gap_between_copies_and_ordinary_neighbours():
    ids, codes, vectors = collection_with_copies()
    graph = neighbour_graph(vectors, ids, codes)
    threshold = suggest_threshold(graph.nearest)
    copies = graph.nearest[graph.nearest < 0.2]
    ordinary = graph.nearest[graph.nearest >= 0.2]
    assert len(copies) == 40 and copies.max() < threshold < ordinary.min()


def test_measured_copies_set_the_threshold_where_they_part_from_ordinary_neighbours():
    rng = np.random.default_rng(6)
    nearest = np.concatenate([rng.uniform(0.0, 0.05, 20), rng.uniform(0.3, 1.5, 980)])  # 20 copies among them
    copies = rng.uniform(0.0, 0.1, 500)
    assert 0.04 <= suggest_threshold(nearest, copies) < 0.3  # the copies, no ordinary pair
    overlapping = rng.uniform(0.0, 1.0, 500)  # a model whose codes move a lot under edits: capped
    assert suggest_threshold(nearest, overlapping) == pytest.approx(np.quantile(nearest, MAX_JOINED))


def test_the_gap_may_end_at_the_first_ordinary_neighbour():
    nearest = np.concatenate([np.full(10, 0.02), np.random.default_rng(5).uniform(0.9, 1.1, 500)])
    assert 0.02 < suggest_threshold(nearest) < 0.9


def test_without_copies_the_threshold_is_a_small_share_of_the_typical_neighbour_distance():
    nearest = np.random.default_rng(1).uniform(1.0, 2.0, 1000)  # no low tail: no gap
    assert suggest_threshold(nearest) == pytest.approx(FLOOR_SHARE * np.median(nearest))
    assert suggest_threshold(np.array([1.0])) == 0.0


def test_groups_are_the_connected_components_below_the_threshold_largest_first():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((200, D)).astype(np.float32) * 3
    # A chain of three (a-b, b-c close; a-c further than the threshold) and a pair.
    chain = base[0] + np.array([[0.0] * D, [0.04] + [0.0] * (D - 1), [0.08] + [0.0] * (D - 1)], np.float32)
    pair = base[1] + np.array([[0.0] * D, [0.0, 0.03] + [0.0] * (D - 2)], np.float32)
    codes = np.concatenate([chain, pair, base[2:]])
    ids = np.arange(10, 10 + len(codes), dtype=np.int64)
    vectors = VectorIndex.build(ids, codes, 1)
    graph = neighbour_graph(vectors, ids, codes)
    by_id = dict(zip(ids.tolist(), codes))
    groups = duplicate_groups(graph, by_id, threshold=0.05)
    # The chain is cut: 12 is within the threshold of 11 but not of 10, the group's first image.
    assert [[i for i, _ in g.members] for g in groups] == [[13, 14], [10, 11]]  # equal sizes: the tighter first
    assert groups[1].members[0] == (10, 0.0) and groups[1].spread == pytest.approx(0.04, abs=1e-4)
    wider = duplicate_groups(graph, by_id, threshold=0.09)
    assert [[i for i, _ in g.members] for g in wider] == [[10, 11, 12], [13, 14]]
    assert duplicate_groups(graph, by_id, threshold=0.0) == []


def test_groups_follow_writes_made_while_serving():
    ids, codes, vectors = collection_with_copies(n=300, copies=0)
    live = LiveVectors(vectors)
    copy = codes[5] + 0.001
    live.add(np.array([1000]), copy[None])  # an edited copy uploaded over HTTP
    live.remove(np.array([ids[7]]))
    all_ids, all_codes = np.append(np.delete(ids, 7), 1000), np.vstack([np.delete(codes, 7, axis=0), copy])
    graph = neighbour_graph(live, all_ids, all_codes)
    groups = duplicate_groups(graph, dict(zip(all_ids.tolist(), all_codes)), threshold=0.05)
    assert [[i for i, _ in g.members] for g in groups] == [[int(ids[5]), 1000]]
    assert ids[7] not in graph.neighbours


def test_the_pca_map_is_deterministic_and_spreads_the_strongest_directions():
    rng = np.random.default_rng(3)
    codes = rng.standard_normal((400, D)) * np.array([10, 5, 1, 1, 1, 1, 1, 1])
    xy = project(codes)
    assert xy.shape == (400, 2) and xy.min() == 0.0 and xy.max() == 1.0
    np.testing.assert_array_equal(xy, project(codes.copy()))
    assert abs(np.corrcoef(xy[:, 0], codes[:, 0])[0, 1]) > 0.99 and abs(np.corrcoef(xy[:, 1], codes[:, 1])[0, 1]) > 0.95
    assert project(np.zeros((0, D))).shape == (0, 2) and project(np.ones((1, D))).shape == (1, 2)
    with pytest.raises(ValueError, match="unknown projection"):
        project(codes, "tsne")


@pytest.mark.slow  # numba compiles UMAP's kernels on first use
@pytest.mark.skipif(not umap_available(), reason="umap-learn (the optional map extra) is not installed")
def test_the_umap_map_when_its_extra_is_installed():
    codes = np.random.default_rng(4).standard_normal((60, D))
    xy = project(codes, "umap")
    assert xy.shape == (60, 2) and np.isfinite(xy).all() and xy.min() == 0.0 and xy.max() == 1.0


def test_without_the_extra_umap_is_a_clear_error(monkeypatch):
    import indexer.projection

    monkeypatch.setattr(indexer.projection, "umap_available", lambda: False)
    with pytest.raises(ProjectionUnavailable, match="optional extra"):
        project(np.random.default_rng(4).standard_normal((60, D)), "umap")


def test_map_groups_are_top_level_folders_largest_first():
    group, names = folder_groups(["cats/a.jpg", "dogs/b.jpg", "dogs/x/c.jpg", "top.jpg", "dogs/d.jpg", "cats/e.jpg"])
    assert names == ["dogs", "cats", ""] and list(group) == [1, 0, 0, 2, 0, 1]  # "" for images at the top
