"""LiveVectors: a saved index plus writes, on real FAISS, for both index kinds the build chooses."""
from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.live import LiveVectors
from indexer.vectors import META_FILE, VectorIndex

D = 8
N = 2_000  # enough codes for an IVF index with real lists (128 of them)
KINDS = {"exact": 100_000, "ivf-flat": 1_000}  # kind -> exact_limit that makes VectorIndex.build choose it


def random_codes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


class Spy:
    """Wraps a VectorIndex's search to record the k each call asks the saved index for."""

    def __init__(self, base: VectorIndex):
        self.asked: list[int] = []
        self._search = base.search
        base.search = self.search  # an instance attribute: only this index is watched

    def search(self, xq: np.ndarray, k: int):
        self.asked.append(k)
        return self._search(xq, k)


class Model:
    """What the live index should hold: id -> code, kept by hand as the reference."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray):
        self.codes = dict(zip(ids.tolist(), codes))

    def nearest(self, query: np.ndarray, k: int) -> list[int]:
        ids = np.array(list(self.codes))
        distances = np.linalg.norm(np.stack(list(self.codes.values())) - query, axis=1)
        return ids[np.argsort(distances)[:k]].tolist()


@pytest.fixture(params=list(KINDS))
def live(request) -> tuple[LiveVectors, Model]:
    """A live index over N random codes with ids 1..N (as the catalogue numbers them), of each kind."""
    ids, codes = np.arange(1, N + 1), random_codes(N, 0)
    base = VectorIndex.build(ids, codes, generation=1, exact_limit=KINDS[request.param])
    assert base.kind == request.param and base.largest_id == N
    return LiveVectors(base), Model(ids, codes)


def check_search(vectors: LiveVectors, model: Model, k: int = 10, queries: int = 40) -> None:
    """Every hit is a live id at its current code's distance, nearest first; the top k match brute force."""
    xq = random_codes(queries, 99)
    distances, ids = vectors.search(xq, k)  # (m, k) each
    found = 0
    for row in range(queries):
        hits = [int(i) for i in ids[row] if i >= 0]
        assert len(hits) == k and len(set(hits)) == k
        assert all(i in model.codes for i in hits), "a removed id came back"
        true = [float(np.linalg.norm(model.codes[i] - xq[row])) for i in hits]
        np.testing.assert_allclose(distances[row], true, rtol=1e-4, atol=1e-4)  # a re-added id at its new code
        assert (np.diff(distances[row]) >= 0).all()
        found += len(set(hits) & set(model.nearest(xq[row], k)))
    recall = found / (queries * k)
    assert recall == 1.0 if vectors.kind == "exact" else recall >= 0.9, recall


def test_writes_count_and_search_like_the_collection_they_describe(live):
    vectors, model = live
    spy = Spy(vectors.base)
    assert len(vectors) == N
    check_search(vectors, model)

    new_ids, new_codes = np.arange(N + 1, N + 101), random_codes(100, 1)  # fresh ids, above the saved index's
    vectors.add(new_ids, new_codes)
    model.codes.update(zip(new_ids.tolist(), new_codes))
    assert len(vectors) == N + 100
    spy.asked.clear()
    check_search(vectors, model)
    assert spy.asked == [10]  # additions cost the saved index nothing

    readded, readded_codes = np.array([5, 17, 300]), random_codes(3, 2)  # saved ids, new codes: old copies hidden
    vectors.add(readded, readded_codes)
    model.codes.update(zip(readded.tolist(), readded_codes))
    assert len(vectors) == N + 100
    replaced = random_codes(2, 3)
    vectors.add(new_ids[:2], replaced)  # an addition added again replaces its code, hides nothing
    model.codes.update(zip(new_ids[:2].tolist(), replaced))
    assert len(vectors) == N + 100

    vectors.remove([1, 2, 5])  # two saved ids, and one saved id that had been added again
    vectors.remove(new_ids[-4:])  # additions only: they leave the overlay, the saved index is not asked for more
    for i in [1, 2, 5, *new_ids[-4:].tolist()]:
        del model.codes[i]
    assert len(vectors) == N + 100 - 3 - 4 == len(model.codes)
    vectors.remove([1, 10**9])  # already gone, never there: nothing changes
    assert len(vectors) == len(model.codes)

    spy.asked.clear()
    check_search(vectors, model)
    hidden = 5  # saved copies no longer live: 1, 2 and 5 removed, 17 and 300 superseded
    assert spy.asked == [10 + hidden]


def test_a_search_for_everything_returns_every_live_id_once(live):
    vectors, _ = live
    vectors.add(np.arange(N + 1, N + 21), random_codes(20, 4))
    vectors.add(np.array([7]), random_codes(1, 5))
    vectors.remove([3, N + 1])
    _, ids = vectors.search(random_codes(1, 6), len(vectors))  # (1, all)
    expected = set(range(1, N + 21)) - {3, N + 1}
    assert sorted(ids[0].tolist()) == sorted(expected) and len(vectors) == len(expected)


def test_an_exact_index_knows_its_ids_even_with_gaps():
    base = VectorIndex.build(np.arange(0, 200, 2), random_codes(100, 7), generation=1)
    assert base.holds(np.array([0, 2, 198, 3, 199, 200, -1])).tolist() == [True] * 3 + [False] * 4
    vectors = LiveVectors(base)
    vectors.remove([3, 5])  # between saved ids, and never saved: not subtracted from the count
    assert len(vectors) == 100
    vectors.add(np.array([3]), random_codes(1, 8))
    assert len(vectors) == 101


def test_an_empty_saved_index_takes_writes():
    vectors = LiveVectors(VectorIndex.build(np.zeros(0, np.int64), np.zeros((0, D), np.float32), generation=1))
    assert vectors.base.largest_id == -1 and len(vectors) == 0
    vectors.add(np.array([1, 2]), random_codes(2, 9))
    vectors.remove([1])
    _, ids = vectors.search(random_codes(1, 10), 5)
    assert len(vectors) == 1 and [i for i in ids[0].tolist() if i >= 0] == [2]


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "from-the-lists"])
def test_a_loaded_ivf_index_knows_its_largest_id(tmp_path, recorded):
    ids = np.arange(10, 10 + N) * 3  # not dense, not from 1: the largest is not the count
    VectorIndex.build(ids, random_codes(N, 11), generation=4, exact_limit=KINDS["ivf-flat"]).save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["largest_id"] == int(ids.max())
    if not recorded:  # a vectors.json written before the largest id was recorded: read off the mmapped lists
        del meta["largest_id"]
        (tmp_path / META_FILE).write_text(json.dumps(meta))
    loaded = VectorIndex.load(tmp_path, 4)
    assert loaded.kind == "ivf-flat" and loaded.largest_id == int(ids.max())
    vectors = LiveVectors(loaded)
    vectors.add(np.array([int(ids.max()) + 1]), random_codes(1, 12))
    vectors.remove([int(ids[0])])
    assert len(vectors) == N
