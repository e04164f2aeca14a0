"""benchmarks/duplicates.py on a small synthetic collection: planted copies are grouped with their originals."""
from benchmarks.duplicates import measure, synthetic_collection


def test_planted_copies_sit_far_closer_than_ordinary_neighbours():
    ids, codes, original, typical = synthetic_collection(2_000)
    assert len(ids) == len(codes) == 2_000 and (original >= 0).sum() == 20 and typical > 0


def test_the_benchmark_groups_every_planted_copy_and_little_else():
    row = measure(3_000)
    assert row["index"] == "exact" and row["planted"] == 30
    assert row["recall"] == 1.0 and row["precision"] >= 0.9, row
