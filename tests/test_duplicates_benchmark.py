"""The duplicates, map and planted-copies benchmarks' own parts, on small inputs: they measure what they say."""
from benchmarks.duplicates import measure, synthetic_collection


def test_planted_copies_sit_far_closer_than_ordinary_neighbours():
    ids, codes, original, typical = synthetic_collection(2_000)
    assert len(ids) == len(codes) == 2_000 and (original >= 0).sum() == 20 and typical > 0


def test_the_benchmark_groups_every_planted_copy_and_little_else():
    row = measure(3_000)
    assert row["index"] == "exact" and row["planted"] == 30
    assert row["recall"] == 1.0 and row["precision"] >= 0.9, row


def test_the_map_benchmark_projects_clustered_codes():
    from benchmarks.map import projection_seconds, synthetic_codes

    codes = synthetic_codes(1_000)
    assert codes.shape == (1_000, 30) and codes.dtype.name == "float32"
    assert 0 < projection_seconds(1_000, "pca") < 60


def test_the_phash_baseline_groups_byte_identical_copies_at_distance_zero(tmp_path):
    from benchmarks.planted import DEMO, Planted, phash_groups

    photos = sorted((DEMO / "crab").iterdir())[:6]
    for photo in photos:
        (tmp_path / photo.name).write_bytes(photo.read_bytes())
    (tmp_path / "copy.jpg").write_bytes(photos[0].read_bytes())
    paths = sorted(p.name for p in tmp_path.iterdir())
    best = phash_groups(tmp_path, paths, [Planted("copy.jpg", photos[0].name, ("bytes",))], frozenset())
    assert best["recall"] == 1.0 and best["false_share"] == 0.0 and best["hamming"] == 0
