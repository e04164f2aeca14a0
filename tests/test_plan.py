"""The incremental plan as a pure function: what a build encodes, keeps, drops and retries. No TensorFlow."""
from __future__ import annotations

import subprocess
import sys

from indexer.plan import plan
from indexer.scan import FileEntry

A, B, C, D = (FileEntry(name, 100 + i, 10**18 + i) for i, name in enumerate(["a.jpg", "b.jpg", "c/d.png", "e.gif"]))


def fingerprint(entry: FileEntry) -> tuple[int, int]:
    return entry.size, entry.mtime_ns


def test_importing_the_plan_loads_neither_tensorflow_nor_sqlite():
    # A fresh interpreter: in this one another test may already have imported them.
    code = "import sys, indexer.plan; print(sorted({'tensorflow', 'keras', 'sqlite3'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_empty_catalogue_encodes_everything_in_scan_order():
    result = plan([A, B, C], {}, {})
    assert result.to_encode == [A, B, C]
    assert (result.to_retry, result.unchanged, result.still_skipped, result.to_drop) == ([], [], [], [])


def test_unchanged_files_are_kept_and_changed_ones_encoded():
    resized = FileEntry(B.relpath, B.size + 1, B.mtime_ns)  # same name, other size
    touched = FileEntry(C.relpath, C.size, C.mtime_ns + 1)  # same size, newer mtime
    result = plan([A, resized, touched, D], {p.relpath: fingerprint(p) for p in (A, B, C)}, {})
    assert result.unchanged == [A]
    assert result.to_encode == [resized, touched, D]  # two changed and one new, in scan order
    assert result.to_retry == [] and result.to_drop == []


def test_files_gone_from_the_folder_are_dropped_once():
    indexed = {p.relpath: fingerprint(p) for p in (A, B, C)}
    skipped = {D.relpath: (*fingerprint(D), "empty file"), B.relpath: (*fingerprint(B), "deleted over HTTP")}
    result = plan([A], indexed, skipped)
    assert result.unchanged == [A]
    assert sorted(result.to_drop) == ["b.jpg", "c/d.png", "e.gif"]  # b.jpg both catalogued and tombstoned: once
    assert len(result.to_drop) == 3
    assert result.to_encode == [] and result.still_skipped == []


def test_a_file_that_failed_is_not_retried_until_it_changes():
    skipped = {B.relpath: (*fingerprint(B), "cannot identify image file"), C.relpath: (*fingerprint(C), "empty file")}
    fixed = FileEntry(C.relpath, 5_000, C.mtime_ns + 10**9)  # the user replaced the empty file
    result = plan([A, B, fixed], {A.relpath: fingerprint(A)}, skipped)
    assert result.still_skipped == [("b.jpg", "cannot identify image file")]  # reported again with its reason
    assert result.to_encode == [fixed] and result.to_retry == [fixed]
    assert result.unchanged == [A] and result.to_drop == []


def test_a_catalogued_file_is_judged_by_its_catalogue_row_first():
    # Should a path be both catalogued and skip-listed with the same fingerprint, the catalogue row wins.
    result = plan([A], {A.relpath: fingerprint(A)}, {A.relpath: (*fingerprint(A), "deleted over HTTP")})
    assert result.unchanged == [A] and result.still_skipped == [] and result.to_encode == []


def test_every_file_found_gets_exactly_one_decision():
    found = [FileEntry(f"{i:03d}.jpg", i % 7, i % 5) for i in range(60)]
    indexed = {f"{i:03d}.jpg": (i % 7, (i % 5) + (i % 3 == 0)) for i in range(0, 60, 2)}  # a third stale
    skipped = {f"{i:03d}.jpg": (i % 7, (i % 5) + (i % 4 == 0), "bad") for i in range(1, 60, 4)}
    skipped.update({"gone.jpg": (1, 1, "bad")})
    indexed.update({"gone/too.jpg": (1, 1)})
    result = plan(found, indexed, skipped)
    decided = [e.relpath for e in result.to_encode + result.unchanged] + [p for p, _ in result.still_skipped]
    assert sorted(decided) == [e.relpath for e in found]  # no file twice, none left out
    assert {e.relpath for e in result.to_retry} <= set(skipped) and set(result.to_retry) <= set(result.to_encode)
    assert sorted(result.to_drop) == ["gone.jpg", "gone/too.jpg"]
    assert len(result.unchanged) == sum(1 for i in range(0, 60, 2) if i % 3)
