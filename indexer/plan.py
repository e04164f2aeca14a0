"""What an incremental build does with each file: encode it, keep it, drop it, or leave it skipped.

Pure: plain data in (the scan, the catalogue's fingerprints), plain data out. No TensorFlow, no SQLite, no file
access, so every rule is unit-tested in milliseconds. A file is known by (size, mtime_ns): the same pair as when
it was catalogued means unchanged; its bytes are not read.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from indexer.scan import FileEntry

Fingerprint = tuple[int, int]  # (size, mtime_ns)


@dataclass(frozen=True)
class Plan:
    """The decisions of one build, before any file is decoded."""

    to_encode: list[FileEntry]  # new, changed, or failed before and changed since: decoded and encoded, scan order
    to_retry: list[FileEntry]  # the part of `to_encode` that failed before: the user may have fixed it
    unchanged: list[FileEntry]  # catalogued with the same size and mtime: kept as they are
    still_skipped: list[tuple[str, str]]  # (relpath, reason): failed before, unchanged since, reported again
    to_drop: list[str]  # catalogued or skip-listed paths no longer in the folder


def plan(found: Iterable[FileEntry], indexed: Mapping[str, Fingerprint],
         skipped: Mapping[str, tuple[int, int, str]]) -> Plan:
    """Decide each file's fate from the scan and the catalogue (`indexed`: relpath -> (size, mtime_ns);
    `skipped`: relpath -> (size, mtime_ns, reason) of files that failed before)."""
    to_encode: list[FileEntry] = []
    to_retry: list[FileEntry] = []
    unchanged: list[FileEntry] = []
    still_skipped: list[tuple[str, str]] = []
    present: set[str] = set()
    for entry in found:
        present.add(entry.relpath)
        fingerprint = (entry.size, entry.mtime_ns)
        failed = skipped.get(entry.relpath)
        if indexed.get(entry.relpath) == fingerprint:
            unchanged.append(entry)
        elif failed is not None and failed[:2] == fingerprint:
            # Decoding it again would fail again: a corrupt file costs one attempt, not one per build.
            still_skipped.append((entry.relpath, failed[2]))
        else:
            to_encode.append(entry)
            if failed is not None:
                to_retry.append(entry)
    to_drop = [p for p in dict.fromkeys([*indexed, *skipped]) if p not in present]  # each path once, in order
    return Plan(to_encode, to_retry, unchanged, still_skipped, to_drop)
