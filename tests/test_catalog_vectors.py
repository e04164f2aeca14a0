"""The catalogue (source of truth) and the FAISS vectors derived from it."""
from __future__ import annotations

import os

import numpy as np
import pytest

from indexer.catalog import Catalog, NewImage
from indexer.collection import load_vectors
from indexer.vectors import META_FILE, VectorIndex, VectorsStale, ivf_lists


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


def test_identical_files_are_listed_by_content(tmp_path):
    def image(relpath: str, digest: str) -> NewImage:
        return NewImage(relpath, 10, 1, digest, 4, 4, np.zeros(2, np.float32), 0.01)

    with Catalog(tmp_path) as cat:
        with cat.conn:
            cat.upsert([image(f"same{i}.jpg", "aa" * 32) for i in range(6)] + [image("other.jpg", "bb" * 32),
                                                                              image("twin1.jpg", "cc" * 32),
                                                                              image("twin2.jpg", "cc" * 32)])
        ids = cat.ids_of([f"same{i}.jpg" for i in range(6)] + ["twin1.jpg", "twin2.jpg"])
        assert sorted(cat.identical_files()) == sorted([[ids[f"same{i}.jpg"] for i in range(6)],
                                                        [ids["twin1.jpg"], ids["twin2.jpg"]]])


def test_records_and_worst_reconstructed_over_many_ids(tmp_path):
    with Catalog(tmp_path) as cat:
        with cat.conn:
            cat.upsert([NewImage(f"{i}.jpg", 10, 1, "ab" * 32, 4, 4, np.zeros(2, np.float32), i / 40_000)
                        for i in range(40_000)])
        ids, _ = cat.all_codes(2)
        records = cat.records(ids.tolist())  # more ids than many SQLite builds take in one statement
        assert len(records) == 40_000 and records[int(ids[7])].relpath == "7.jpg"
        worst = cat.worst_reconstructed(3)
        assert [path for _, path, _ in worst] == ["39999.jpg", "39998.jpg", "39997.jpg"]
        assert len(cat.recon_errors()) == 40_000


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


def clustered_codes(n: int, d: int = 30, clusters: int = 200, seed: int = 0) -> np.ndarray:
    """Codes shaped like real ones: clumps of similar images, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    return (centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_large_collections_get_a_tuned_ivf_index_with_measured_recall():
    codes, queries = np.split(clustered_codes(20_200), [20_000])  # queries: new images of the same kinds
    ids = np.arange(7, 20_007, dtype=np.int64)
    vectors = VectorIndex.build(ids, codes, generation=1, exact_limit=5_000)
    assert vectors.kind == "ivf-flat" and vectors.meta["nlist"] == ivf_lists(20_000) == 512
    assert vectors.meta["recall_at_10"] >= 0.98 and 1 <= vectors.nprobe <= vectors.meta["nlist"]
    # Check the recorded recall independently, with numpy brute force on queries that are not in the index.
    distances, found = vectors.search(queries, 10)
    exact = np.sort(((queries[:, None, :] - codes[None]) ** 2).sum(-1), axis=1)[:, 9]  # (200,) 10th squared
    assert ((distances**2 <= exact[:, None] * (1 + 1e-4) + 1e-5) & (found >= 0)).mean() >= 0.98
    own_distances, own = vectors.search(codes[:100], 1)
    assert np.array_equal(own[:, 0], ids[:100])
    # A page deeper than the probed lists hold is still filled.
    _, deep = vectors.search(queries[:1], 2_000)
    assert (deep >= 0).all() and len(set(deep[0].tolist())) == 2_000


def test_small_collections_stay_exact():
    vectors = VectorIndex.build(np.arange(50), clustered_codes(50), generation=1)
    assert vectors.kind == "exact" and vectors.meta["recall_at_10"] == 1.0


@pytest.mark.parametrize("exact_limit", [100_000, 1_000])
def test_save_load_and_staleness(tmp_path, exact_limit):
    codes = clustered_codes(3_000)
    VectorIndex.build(np.arange(3_000), codes, generation=7, exact_limit=exact_limit).save(tmp_path)
    loaded = VectorIndex.load(tmp_path, 7)
    assert len(loaded) == 3_000 and loaded.kind == ("exact" if exact_limit > 3_000 else "ivf-flat")
    assert np.array_equal(loaded.search(codes[:20], 1)[1][:, 0], np.arange(20))
    with pytest.raises(VectorsStale, match="generation 7"):
        VectorIndex.load(tmp_path, 8)
    index_file = tmp_path / "vectors-7.faiss"
    data = index_file.read_bytes()

    def replace(content: bytes) -> None:
        # A new file renamed over the old, never a rewrite in place: `loaded` may have the old one memory-mapped,
        # and truncating a mapped file makes the next touch of its pages a SIGBUS (lookalike itself never does it).
        tmp = tmp_path / "replacement"
        tmp.write_bytes(content)
        tmp.replace(index_file)

    replace(data[: len(data) // 2])
    with pytest.raises(VectorsStale, match="bytes"):
        VectorIndex.load(tmp_path, 7)
    replace(b"x" * len(data))
    with pytest.raises(VectorsStale, match="corrupt"):
        VectorIndex.load(tmp_path, 7)
    (tmp_path / META_FILE).write_text("{half")
    with pytest.raises(VectorsStale, match="unreadable"):
        VectorIndex.load(tmp_path, 7)
    (tmp_path / META_FILE).unlink()
    with pytest.raises(VectorsStale, match="does not exist"):
        VectorIndex.load(tmp_path, 7)


def test_stale_or_corrupt_vectors_are_rebuilt_from_the_catalogue(tmp_path):
    with Catalog(tmp_path) as cat:
        with cat.conn:
            cat.upsert([new_image(f"{i}.jpg", [i, 0]) for i in range(5)])
            cat.bump_generation()
        (tmp_path / "vectors.faiss").write_bytes(b"a format-1 file")  # what earlier versions wrote
        vectors = load_vectors(cat, tmp_path, 2, save=True)
        assert len(vectors) == 5 and vectors.generation == cat.generation
        calibration = vectors.meta["calibration"]
        assert calibration["score_scale"] > 0 and len(calibration["error_quantiles"]) == 1001
        reloaded = VectorIndex.load(tmp_path, cat.generation)  # the repaired pair was written
        assert len(reloaded) == 5 and reloaded.meta["calibration"] == vectors.meta["calibration"]
        assert sorted(p.name for p in tmp_path.glob("vectors*")) == [f"vectors-{cat.generation}.faiss", META_FILE]


def test_failed_save_leaves_previous_index_in_force(tmp_path, monkeypatch):
    VectorIndex.build(np.arange(3), np.eye(3, dtype=np.float32), generation=1).save(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        VectorIndex.build(np.arange(2), np.eye(2, 3, dtype=np.float32), generation=2).save(tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp file left behind
    assert len(VectorIndex.load(tmp_path, 1)) == 3


def test_a_catalogue_from_before_sampled_errors_is_upgraded_in_place(tmp_path):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "catalog.sqlite")  # the table as 0.1 wrote it: recon_error NOT NULL
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE images (id INTEGER PRIMARY KEY AUTOINCREMENT, relpath TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, width INTEGER NOT NULL,
            height INTEGER NOT NULL, code BLOB NOT NULL, recon_error REAL NOT NULL, indexed_at REAL NOT NULL);
        CREATE TABLE skipped (relpath TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL);
    """)
    code = np.zeros(2, "<f4").tobytes()
    conn.executemany("INSERT INTO images VALUES (NULL, ?, 1, 1, 'ab', 4, 4, ?, 0.25, 0)",
                     [("a.jpg", code), ("b.jpg", code), ("c.jpg", code)])
    conn.execute("DELETE FROM images WHERE relpath = 'c.jpg'")  # id 3 is retired
    conn.commit()
    conn.close()
    with Catalog(tmp_path) as cat:
        assert cat.count() == 2 and cat.recon_errors().tolist() == [0.25, 0.25]
        with cat.conn:
            cat.upsert([NewImage("d.jpg", 1, 1, "cd", 4, 4, np.ones(2, np.float32), None)])  # not measured
        assert cat.recon_errors().tolist() == [0.25, 0.25]
        assert {r.relpath: r.id for r in cat.records([1, 2, 3, 4]).values()} == {"a.jpg": 1, "b.jpg": 2, "d.jpg": 4}
    with Catalog(tmp_path) as cat:  # opening again changes nothing
        assert cat.count() == 3


def test_the_search_thread_setting_holds_in_every_thread_that_searches():
    import threading

    import faiss

    from indexer import vectors as vectors_module
    from indexer.live import LiveVectors

    # OpenMP counts per thread: a request thread started after set_threads must still search with its setting,
    # not with one thread per core (checked on a 2-core machine, where the default is 2).
    index = LiveVectors(VectorIndex.build(np.arange(50), clustered_codes(50), generation=1))
    seen = {}
    saved = vectors_module._threads
    try:
        vectors_module.set_threads(1)

        def search(name, wanted):
            seen[name + " before"] = faiss.omp_get_max_threads()
            index.search(clustered_codes(1), 5)
            seen[name] = (faiss.omp_get_max_threads(), wanted)

        for name, wanted in (("first", 1), ("second", 1)):
            worker = threading.Thread(target=search, args=(name, wanted))
            worker.start()
            worker.join()
        vectors_module.set_threads(3)  # a new setting reaches a thread that had applied the old one
        worker = threading.Thread(target=search, args=("third", 3))
        worker.start()
        worker.join()
    finally:
        vectors_module._threads = saved
        faiss.omp_set_num_threads(saved or os.cpu_count() or 1)
    assert all(got == wanted for got, wanted in (v for k, v in seen.items() if not k.endswith("before"))), seen
    if (os.cpu_count() or 1) > 1:
        assert seen["first before"] > 1  # without the fix, this is what the search would have used
