"""The build's one writer: encoded batches into the catalogue in transactions, and the skip report.

Whichever engine decoded and encoded, only this process writes, and only here: each transaction holds at most
`commit_every` images with the failures seen so far and bumps the generation, so a crash keeps whole
transactions only and costs at most one transaction's work. The next run's plan sees what was committed.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from encoder import store
from indexer.catalog import Catalog, NewImage
from indexer.engine import EncodedBatch
from indexer.scan import FileEntry

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.tsv"


@dataclass
class Committed:
    """What the writer wrote: images catalogued, and files recorded as skipped with the reason."""

    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)


def commit_batches(catalog: Catalog, batches: Iterable[EncodedBatch], commit_every: int) -> Committed:
    """Write `batches` to `catalog` in transactions of `commit_every` images (the rest in a last one)."""
    commit_every = max(1, commit_every)  # each transaction holds at least one image, or the loop below never ends
    done = Committed()
    rows: list[NewImage] = []  # encoded, not yet committed
    failed: list[tuple[FileEntry, str]] = []

    def commit(count: int) -> None:
        with catalog.conn:  # one transaction: a crash keeps whole batches only
            catalog.upsert(rows[:count])
            catalog.record_skipped([(e.relpath, e.size, e.mtime_ns, reason) for e, reason in failed])
            catalog.bump_generation()
        done.indexed += count
        done.skipped.extend((e.relpath, reason) for e, reason in failed)
        del rows[:count]
        failed.clear()

    for batch in batches:
        rows.extend(batch.rows)
        failed.extend(batch.failed)
        while len(rows) >= commit_every:  # an engine's batch may span transactions: cut it at their size
            commit(commit_every)
    commit(len(rows))
    log.debug("committed %d images, %d skipped", done.indexed, len(done.skipped))
    return done


def write_skip_report(index_dir: Path, skipped: list[tuple[str, str]]) -> None:
    """Replace INDEX_DIR/skipped.tsv with this run's skipped files (tabs and newlines in reasons become spaces)."""
    lines = ["path\treason"] + [f"{p}\t{r.replace(chr(9), ' ').replace(chr(10), ' ')}" for p, r in skipped]
    store.atomic_write_bytes(index_dir / SKIPPED_FILE, ("\n".join(lines) + "\n").encode())
