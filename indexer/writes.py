"""Adding and removing images of a collection while it is being served.

An added image is stored in the indexed folder under `uploads/`, named by its sha256 (so the same bytes twice are
one image), then catalogued and made searchable. The order makes every crash harmless: the file is written
atomically first, the catalogue row is committed second (the commit point), the live index is updated last. A
crash before the commit leaves a file that the next `indexer build` indexes like any other; nothing is lost,
nothing half-written is ever searched.

A removed image leaves the catalogue. A file that came through `uploads/` is deleted; any other file belongs to
the user's folder and stays on disk, with a tombstone in the catalogue's skip list (keyed by size and mtime, as
for unreadable files) so that the next build does not index it again until it changes.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoder.preprocess import ImageError, load_image
from encoder.store import atomic_write_bytes
from indexer.catalog import MODEL_KEY, Catalog, NewImage
from indexer.copies import sketches
from indexer.live import LiveVectors
from indexer.lock import CollectionBusy, exclusive

log = logging.getLogger(__name__)

UPLOADS = "uploads"
WRITE_WAIT = 0.5  # seconds a write waits for the collection's lock before answering busy
DELETED = "deleted over HTTP"
# A stored upload's extension, by the format its bytes are in: the scanner picks files by extension.
EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
              "TIFF": ".tif", "AVIF": ".avif", "HEIF": ".heic", "PPM": ".pnm"}


class WriteBusy(RuntimeError):
    """Another writer (an `indexer build`) holds the collection."""


class BadUpload(ValueError):
    """One of the uploaded images cannot be used; nothing was written."""

    def __init__(self, position: int, name: str, reason: str):
        super().__init__(f"image {position + 1} ({name[:80]!r}): {reason}")


@dataclass(frozen=True)
class Added:
    """One stored image."""

    id: int
    path: str  # relative to the indexed folder
    new: bool  # False when the same bytes were already in the collection


class CollectionWriter:
    """Serialised writes to one served collection: files, catalogue rows and live vectors, in that order."""

    def __init__(self, index_dir: Path, root: Path, encoder, vectors: LiveVectors,
                 committed: Callable[[], None] = lambda: None):
        self.index_dir = Path(index_dir)
        self.root = Path(root)
        self.encoder = encoder
        self.vectors = vectors
        self.committed = committed  # called after each commit: the searches' catalogue snapshot moves on
        self.catalog = Catalog(index_dir)  # its own read-write connection; searches keep their read-only one
        self._lock = threading.Lock()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold off this writer's writes (waiting for one in progress) while the body runs: a server switching to a
        new generation retargets the writer inside it, so that no write lands in the vectors being replaced."""
        with self._lock:
            yield

    def retarget(self, encoder, vectors: LiveVectors, committed: Callable[[], None]) -> None:
        """Write through `encoder` into `vectors`, and call `committed` after commits, from now on (inside paused())."""
        self.encoder, self.vectors, self.committed = encoder, vectors, committed

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock, ExitStack() as held:
            try:
                # The lock `indexer build` takes. A moment's wait rides out another server renewing its snapshot
                # under it (search_api.engine.follow); a build holds it for minutes.
                held.enter_context(exclusive(self.index_dir, wait=WRITE_WAIT))
            except CollectionBusy:
                raise WriteBusy("an indexer build is running on this collection; try again when it ends") from None
            yield

    def add(self, uploads: list[tuple[str, bytes]]) -> list[Added]:
        """Store, catalogue and index `uploads` (name, bytes); all or nothing: one bad image writes none."""
        encoder = self.encoder  # the model these codes come from, whatever a switch does meanwhile
        prepared = []
        for position, (name, data) in enumerate(uploads):
            try:
                decoded = load_image(data, encoder.image_size, encoder.channels)
            except ImageError as exc:
                raise BadUpload(position, name, str(exc)) from None
            digest = hashlib.sha256(data).hexdigest()
            prepared.append((f"{UPLOADS}/{digest[:32]}{EXTENSIONS.get(decoded.format, '.img')}", digest, data, decoded))
        pixels = np.stack([p[3].pixels for p in prepared])  # (n, S, S, C)
        codes, errors = encoder.encode_with_error(pixels)  # (n, d), (n,)
        marks = sketches(pixels)  # (n, SKETCH_BYTES)
        with self._exclusive():
            if self.catalog.get_meta(MODEL_KEY) not in (None, encoder.sha256):
                # A build retrained the encoder since this server loaded it: these codes would not compare with the
                # catalogue's. The server switches to the new model within seconds (search_api.engine.follow).
                raise WriteBusy("the collection was re-encoded with a new model; the server is switching to it, try "
                                "again in a few seconds")
            known = self.catalog.ids_of([p[0] for p in prepared])  # the uploads already catalogued
            rows: list = []
            results: dict[str, bool] = {}  # relpath -> whether this request stored it
            (self.root / UPLOADS).mkdir(exist_ok=True)
            for (relpath, digest, data, decoded), code, error, sketch in zip(prepared, codes, errors, marks):
                path = self.root / relpath
                if relpath in results or (relpath in known and path.is_file()):
                    results.setdefault(relpath, False)  # the same bytes are already stored (or earlier in this batch)
                    continue
                atomic_write_bytes(path, data)
                st = path.stat()
                rows.append(NewImage(relpath, st.st_size, st.st_mtime_ns, digest, decoded.width, decoded.height, code,
                                     float(error), sketch))
                results[relpath] = True
            if rows:
                with self.catalog.conn:  # the commit point
                    self.catalog.upsert(rows)
                    self.catalog.bump_generation()
                self.committed()
            ids = self.catalog.ids_of(list(results))
            if rows:
                self.vectors.add(np.array([ids[r.relpath] for r in rows]), np.stack([r.code for r in rows]))
        log.info("added %d image(s) over HTTP (%d already present)", len(rows), len(results) - len(rows))
        first = {}  # one answer per upload, in order; a repeat within the request is not new the second time
        answers = []
        for relpath, *_ in prepared:
            answers.append(Added(ids[relpath], relpath, results[relpath] and relpath not in first))
            first[relpath] = True
        return answers

    def remove(self, image_id: int) -> str | None:
        """Remove an image; returns its path, or None when there is no such id."""
        with self._exclusive():
            record = self.catalog.records([image_id]).get(image_id)
            if record is None:
                return None
            path = self.root / record.relpath
            with self.catalog.conn:
                self.catalog.remove([record.relpath])
                # Tombstone: the next build leaves this file out while it is unchanged. An uploaded file is deleted
                # just after; the tombstone covers a crash in between, and the build drops it once the file is gone.
                if path.is_file():
                    st = path.stat()
                    self.catalog.record_skipped([(record.relpath, st.st_size, st.st_mtime_ns, DELETED)])
                self.catalog.bump_generation()
            self.committed()
            self.vectors.remove([image_id])
            if record.relpath.startswith(f"{UPLOADS}/"):
                path.unlink(missing_ok=True)
        log.info("removed image %d over HTTP", image_id)
        return record.relpath

    def close(self) -> None:
        """Release the read-write connection."""
        self.catalog.close()


