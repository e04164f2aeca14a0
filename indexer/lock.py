"""One writer per collection: `indexer build`, a server's HTTP writes and its start-up save share one lock file."""
from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


class CollectionBusy(RuntimeError):
    """Another process is writing to the collection."""


@contextmanager
def exclusive(index_dir: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the collection's write lock, waiting up to `wait` seconds for it, else raise CollectionBusy.

    An advisory flock: the kernel drops it when its holder dies, so a killed build never leaves the collection locked.
    """
    with open(Path(index_dir) / LOCK_FILE, "a") as fh:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CollectionBusy(f"another process is writing to {index_dir}") from None
                time.sleep(0.05)
        yield
