"""The build's one writer on a real catalogue: transaction sizes, failures, a stream that dies, the skip report."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from indexer.catalog import Catalog, NewImage
from indexer.commit import SKIPPED_FILE, commit_batches, write_skip_report
from indexer.engine import EncodedBatch
from indexer.scan import FileEntry


def rows(start: int, count: int) -> list[NewImage]:
    return [NewImage(f"img_{i:04d}.png", 100 + i, 10**18 + i, f"{i:064x}", 48, 48,
                     np.full(8, i, np.float32), None, np.zeros(256, np.uint8)) for i in range(start, start + count)]


def batches(sizes: list[int], failures: dict[int, list[tuple[FileEntry, str]]] | None = None) -> list[EncodedBatch]:
    out, start = [], 0
    for n, size in enumerate(sizes):
        out.append(EncodedBatch(rows(start, size), (failures or {}).get(n, [])))
        start += size
    return out


def test_batches_of_any_size_commit_in_transactions_of_commit_every(tmp_path):
    seen = []  # images committed when each batch is handed over

    with Catalog(tmp_path) as catalog:
        def stream() -> Iterator[EncodedBatch]:
            for batch in batches([3, 7, 1, 4]):  # 15 images, batches straddling the transactions of 4
                seen.append(catalog.count())
                yield batch

        committed = commit_batches(catalog, stream(), commit_every=4)
        assert seen == [0, 0, 8, 8]  # whole transactions only, after 0, 3, 10 and 11 images were handed over
        assert committed.indexed == catalog.count() == 15
        assert catalog.generation == 4  # 4 + 4 + 4, then the last 3
        _, codes = catalog.all_codes(8)
        assert sorted(codes[:, 0].tolist()) == list(range(15))  # each image once, with its own code


def test_failures_are_recorded_with_the_next_transaction(tmp_path):
    bad = [(FileEntry("bad.jpg", 5, 6), "empty file"), (FileEntry("worse.png", 7, 8), "cannot identify image file")]
    with Catalog(tmp_path) as catalog:
        committed = commit_batches(catalog, batches([2, 0, 1], {1: bad}), commit_every=10)
        assert committed.indexed == 3
        assert committed.skipped == [("bad.jpg", "empty file"), ("worse.png", "cannot identify image file")]
        assert catalog.skipped_fingerprints() == {"bad.jpg": (5, 6, "empty file"),
                                                  "worse.png": (7, 8, "cannot identify image file")}


def test_a_stream_that_dies_leaves_whole_transactions_only(tmp_path):
    def dying() -> Iterator[EncodedBatch]:
        yield from batches([5, 5])
        raise RuntimeError("engine lost")  # a worker crashed, or the cluster went away

    with Catalog(tmp_path) as catalog, pytest.raises(RuntimeError, match="engine lost"):
        commit_batches(catalog, dying(), commit_every=4)
    with Catalog(tmp_path, readonly=True) as reopened:  # what the next run's plan will see
        assert reopened.count() == 8 and reopened.generation == 2  # two transactions of 4; the 2 after them redone
        assert set(reopened.fingerprints()) == {f"img_{i:04d}.png" for i in range(8)}


def test_skip_report_is_one_line_per_file(tmp_path):
    write_skip_report(tmp_path, [("a.jpg", "empty file"), ("b\u00e9.png", "bad\theader\nsecond line")])
    expected = "path\treason\na.jpg\tempty file\nb\u00e9.png\tbad header second line\n"
    assert (tmp_path / SKIPPED_FILE).read_text("utf-8") == expected
