"""The decode stream: files -> hashed, preprocessed pixels, in worker processes, with back-pressure.

The reader stage of a build. Each file is read once, hashed from the same bytes and decoded through
`encoder.preprocess.load_image` (the path queries take), so a catalogued hash always names the pixels encoded.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoder.preprocess import ImageError, load_image
from indexer.scan import FileEntry

log = logging.getLogger(__name__)

IN_FLIGHT = 4096  # decoded images allowed to wait for the encoder: bounds memory when decoding outruns encoding
SMALL = 64  # fewer files than this are decoded in-process: starting a spawn pool costs more than it saves
CHUNK = 16  # files per message to a worker


@dataclass(frozen=True)
class DecodedFile:
    """A worker's answer for one file: pixels and facts, or the reason it failed."""

    entry: FileEntry
    pixels: np.ndarray | None  # (size, size, channels) uint8; None when the file could not be used
    reason: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0


def stack_pixels(decoded: list[DecodedFile]) -> np.ndarray:
    """The pixels of decoded files as one (n, size, size, channels) uint8 array; each must have pixels."""
    arrays = []
    for d in decoded:
        if d.pixels is None:  # a caller's mistake: failed files are reported, never encoded
            raise ValueError(f"{d.entry.relpath} has no pixels: {d.reason}")
        arrays.append(d.pixels)
    return np.stack(arrays)


def decode_file(root: str, size: int, channels: int, entry: FileEntry) -> DecodedFile:
    """Read, hash and preprocess one file (runs in a worker process)."""
    try:
        with open(os.path.join(root, entry.relpath), "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return DecodedFile(entry, None, f"cannot read: {exc.strerror}")
    try:
        image = load_image(data, size, channels)
    except ImageError as exc:
        return DecodedFile(entry, None, str(exc))
    return DecodedFile(entry, image.pixels, "", hashlib.sha256(data).hexdigest(), image.width, image.height)


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


@contextmanager
def decoding(root: Path, entries: list[FileEntry], size: int, channels: int, workers: int, progress: bool,
             desc: str = "decoding") -> Iterator[Iterator[DecodedFile]]:
    """Start decoding `entries` at once in worker processes; the body iterates over the results in `entries`' order.

    The workers start on entering, so whatever the caller does next (loading TensorFlow and the model: 2-3 s)
    overlaps with decoding. At most IN_FLIGHT results wait unconsumed; small batches are decoded in-process.
    Results come in order (not as they finish) so that a build catalogues files in plan order whichever engine
    ran it: ids are handed out in commit order, and the same folder gets the same ids on every run and engine.
    A slow file holds up at most a window of results, not the workers.
    """
    work = functools.partial(decode_file, str(root), size, channels)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(entries) < SMALL:
        yield _progress(map(work, entries), len(entries), desc, progress)
        return
    # The pool's feeding thread holds back a whole chunk before sending it: the window must exceed the chunks in
    # flight, or the feeder would wait for results that cannot come.
    window = threading.Semaphore(max(IN_FLIGHT, 2 * CHUNK * workers))
    stopping = threading.Event()

    def fed() -> Iterator[FileEntry]:
        # Runs in the pool's task-feeding thread: waiting here is the back-pressure.
        for entry in entries:
            while not window.acquire(timeout=0.5):
                if stopping.is_set():
                    return
            yield entry

    def results(pending: Iterator[DecodedFile]) -> Iterator[DecodedFile]:
        for result in pending:
            window.release()
            yield result

    # spawn, not fork: the parent may already hold TensorFlow's threads, which do not survive a fork.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending = pool.imap(work, fed(), chunksize=CHUNK)
        try:
            yield _progress(results(pending), len(entries), desc, progress)
        finally:
            stopping.set()  # lets the feeding thread end if the body stopped early
            # Let the workers finish what they were sent (a window's worth at most) before the pool ends: leaving
            # `with` terminates them, and a worker killed while it writes a result leaves the result queue's lock
            # held, on which Pool.terminate() then waits for ever (seen once in CI).
            try:
                for _ in pending:
                    pass
            except Exception:  # noqa: BLE001 - a worker's error; the body's own exception, if any, is the one to raise
                log.debug("a decoding worker failed while the pool was wound down", exc_info=True)
            pool.close()
            pool.join()


def decode_all(root: Path, entries: list[FileEntry], size: int, channels: int, workers: int,
               progress: bool, desc: str = "decoding") -> list[DecodedFile]:
    """Decode `entries` (in worker processes for big batches); results in `entries`' order."""
    with decoding(root, entries, size, channels, workers, progress, desc) as results:
        return list(results)
