"""The catalogue (source of truth) and the FAISS vectors derived from it."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.catalog import Catalog, NewImage
from indexer.collection import load_vectors
from indexer.vectors import VECTORS_FILE, VectorIndex, VectorsStale


def new_image(relpath: str, code, size: int = 10) -> NewImage:
    return NewImage(relpath, size, 1, "ab" * 32, 4, 4, np.asarray(code, np.float32), 0.01)


def test_upsert_keeps_ids_and_ids_are_never_reused(tmp_path):
    with Catalog(tmp_path) as cat:
        with cat.conn:
            cat.upsert([new_image("a.jpg", [0, 0]), new_image("b.jpg", [1, 1])])
        ids = {r.relpath: r.id for r in cat.records([1, 2]).values()}
        with cat.conn:
            cat.upsert([new_image("a.jpg", [5, 5], size=99)])  # a changed file keeps its id
            cat.remove(["b.jpg"])
            cat.upsert([new_image("c.jpg", [2, 2])])
        assert cat.records([ids["a.jpg"]])[ids["a.jpg"]].size == 99
        np.testing.assert_array_equal(cat.code_of(ids["a.jpg"]), [5, 5])
        assert cat.code_of(ids["b.jpg"]) is None
        all_ids, codes = cat.all_codes(2)
        assert ids["b.jpg"] not in all_ids and len(all_ids) == 2 and max(all_ids) > ids["b.jpg"]
        assert codes.shape == (2, 2) and codes.dtype == np.float32


def test_generation_and_fingerprints(tmp_path):
    with Catalog(tmp_path) as cat:
        assert cat.generation == 0
        with cat.conn:
            cat.upsert([new_image("a.jpg", [0, 0])])
            cat.record_skipped([("bad.jpg", 3, 4, "empty file")])
            cat.bump_generation()
        assert cat.generation == 1
        assert cat.fingerprints() == {"a.jpg": (10, 1)}
        assert cat.skipped_fingerprints() == {"bad.jpg": (3, 4, "empty file")}


def test_readonly_catalog_refuses_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="build the collection first"):
        Catalog(tmp_path, readonly=True)


def test_exact_search_finds_each_vector_first():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(500, 30)).astype(np.float32)
    ids = np.arange(1000, 1500, dtype=np.int64)
    vectors = VectorIndex.build(ids, codes, generation=3)
    distances, found = vectors.search(codes[:50], 5)
    assert np.array_equal(found[:, 0], ids[:50])
    assert np.allclose(distances[:, 0], 0, atol=1e-3) and np.all(np.diff(distances, axis=1) >= 0)
    # Euclidean, not squared: compare with numpy.
    np.testing.assert_allclose(distances[0, 1], np.linalg.norm(codes[0] - codes[found[0, 1] - 1000]), rtol=1e-4)


def test_save_load_and_staleness(tmp_path):
    codes = np.eye(4, dtype=np.float32)
    VectorIndex.build(np.arange(4), codes, generation=7).save(tmp_path)
    assert len(VectorIndex.load(tmp_path, 7)) == 4
    with pytest.raises(VectorsStale, match="generation 7"):
        VectorIndex.load(tmp_path, 8)
    (tmp_path / VECTORS_FILE).write_bytes((tmp_path / VECTORS_FILE).read_bytes()[:60])
    with pytest.raises(VectorsStale):
        VectorIndex.load(tmp_path, 7)
    (tmp_path / VECTORS_FILE).write_bytes(b"garbage")
    with pytest.raises(VectorsStale, match="not a lookalike vectors file"):
        VectorIndex.load(tmp_path, 7)


def test_stale_or_corrupt_vectors_are_rebuilt_from_the_catalogue(tmp_path):
    with Catalog(tmp_path) as cat:
        with cat.conn:
            cat.upsert([new_image(f"{i}.jpg", [i, 0]) for i in range(5)])
            cat.bump_generation()
        (tmp_path / VECTORS_FILE).write_bytes(b"half a file")
        vectors = load_vectors(cat, tmp_path, 2, save=True)
        assert len(vectors) == 5 and vectors.generation == cat.generation
        assert len(VectorIndex.load(tmp_path, cat.generation)) == 5  # and the repaired file was written


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    VectorIndex.build(np.arange(3), np.eye(3, dtype=np.float32), generation=1).save(tmp_path)
    before = (tmp_path / VECTORS_FILE).read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        VectorIndex.build(np.arange(2), np.eye(2, 3, dtype=np.float32), generation=2).save(tmp_path)
    assert (tmp_path / VECTORS_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [VECTORS_FILE]  # no temp file left behind
