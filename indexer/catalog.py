"""The SQLite catalogue, the collection's source of truth: one row per image with its code as a BLOB."""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
MODEL_KEY = "model_sha256"  # meta: the sha256 of the encoder that made the codes

IMAGES_TABLE = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: a deleted id is never handed to another image
    relpath TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    code BLOB NOT NULL,                     -- float32 little-endian, code_size values
    recon_error REAL,                       -- mean squared reconstruction error per pixel, in [0, 1]; NULL when
                                            -- not measured (catalogues built when indexing measured a sample)
    indexed_at REAL NOT NULL,
    sketch BLOB                             -- 16x16 grey uint8 (indexer.copies); NULL in catalogues made before it
);
"""
SCHEMA = IMAGES_TABLE + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (
    relpath TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ImageRecord:
    """A catalogued image as the service needs it."""

    id: int
    relpath: str
    width: int
    height: int
    size: int
    sha256: str


@dataclass(frozen=True)
class NewImage:
    """A freshly encoded image, ready to be written."""

    relpath: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    code: np.ndarray  # (code_size,) float32
    recon_error: float | None  # None: not measured
    sketch: np.ndarray | None = None  # (SKETCH_BYTES,) uint8, what the copy check compares (indexer.copies)


class Catalog:
    """One SQLite connection to `INDEX_DIR/catalog.sqlite` (WAL mode; readers never block the writer)."""

    def __init__(self, index_dir: str | os.PathLike, readonly: bool = False):
        self.path = Path(index_dir).resolve() / CATALOG_FILE  # absolute: read-only opens go through a file: URI
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"no catalogue at {self.path}: build the collection first")
            self.conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
            self.conn.executescript(SCHEMA)
            self._migrate()
        self.conn.execute("PRAGMA busy_timeout=10000")

    def _migrate(self) -> None:
        columns = {row[1]: row[3] for row in self.conn.execute("PRAGMA table_info(images)")}  # name -> notnull
        if "sketch" not in columns:
            # Catalogues written before the copy check: the column is added empty (their models are of an older
            # format, so the next build re-encodes every image and fills it).
            self.conn.execute("ALTER TABLE images ADD COLUMN sketch BLOB")
            columns["sketch"] = 0
        # Catalogues written before reconstruction errors were sampled declare recon_error NOT NULL. SQLite cannot
        # drop a constraint in place, so copy the table into one with the current schema (ids kept).
        if not columns.get("recon_error"):
            return
        log.info("upgrading the catalogue schema in %s", self.path)
        self.conn.execute("BEGIN IMMEDIATE")  # one transaction: a crash leaves the old table as it was
        try:
            self.conn.execute("ALTER TABLE images RENAME TO images_old")
            self.conn.execute(IMAGES_TABLE)
            self.conn.execute("INSERT INTO images SELECT * FROM images_old")
            # Carry the AUTOINCREMENT high-water mark over, so that ids deleted before the upgrade stay retired.
            self.conn.execute("UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE "
                              "name = 'images_old')) WHERE name = 'images'")
            self.conn.execute("DROP TABLE images_old")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A value from the meta table."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value (within the caller's transaction)."""
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    @property
    def generation(self) -> int:
        """Bumped on every committed change to the images; the FAISS file records the one it was built from."""
        return int(self.get_meta("generation") or 0)

    def hold_snapshot(self) -> None:
        """Read the catalogue as it is now until this is called again, whatever other connections commit meanwhile.

        A WAL reader keeps the snapshot its read transaction began with: a server reads its generation's rows while a
        build commits the next one's, so every hit it returns has its path (see indexer.collection).
        """
        if self.conn.in_transaction:
            self.conn.rollback()
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT count(*) FROM meta").fetchone()  # the snapshot starts at the first read

    def bump_generation(self) -> int:
        """Increment the generation inside the current transaction."""
        new = self.generation + 1
        self.set_meta("generation", str(new))
        return new

    # images
    def count(self) -> int:
        """Number of indexed images."""
        return self.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def fingerprints(self) -> dict[str, tuple[int, int]]:
        """relpath -> (size, mtime_ns) of every indexed image, for change detection."""
        return {r: (s, m) for r, s, m in self.conn.execute("SELECT relpath, size, mtime_ns FROM images")}

    def skipped_fingerprints(self) -> dict[str, tuple[int, int, str]]:
        """relpath -> (size, mtime_ns, reason) of files that failed before, so unchanged ones are not retried."""
        rows = self.conn.execute("SELECT relpath, size, mtime_ns, reason FROM skipped")
        return {r: (s, m, why) for r, s, m, why in rows}

    def upsert(self, images: Iterable[NewImage]) -> None:
        """Insert or update images by path, keeping the id of a path that was already there."""
        now = time.time()
        self.conn.executemany(
            """INSERT INTO images(relpath, size, mtime_ns, sha256, width, height, code, recon_error, indexed_at, sketch)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(relpath) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                 sha256 = excluded.sha256, width = excluded.width, height = excluded.height,
                 code = excluded.code, recon_error = excluded.recon_error, indexed_at = excluded.indexed_at,
                 sketch = excluded.sketch""",
            [
                (i.relpath, i.size, i.mtime_ns, i.sha256, i.width, i.height,
                 np.asarray(i.code, "<f4").tobytes(), None if i.recon_error is None else float(i.recon_error), now,
                 None if i.sketch is None else np.asarray(i.sketch, np.uint8).tobytes())
                for i in images
            ],
        )
        self.conn.executemany("DELETE FROM skipped WHERE relpath = ?", [(i.relpath,) for i in images])

    def record_skipped(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        """Remember files that could not be indexed: (relpath, size, mtime_ns, reason)."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO skipped(relpath, size, mtime_ns, reason) VALUES (?, ?, ?, ?)", rows)

    def remove(self, relpaths: Iterable[str]) -> int:
        """Drop images (and skip records) by path; returns how many images were removed."""
        rows = [(p,) for p in relpaths]
        before = self.conn.total_changes
        self.conn.executemany("DELETE FROM images WHERE relpath = ?", rows)
        removed = self.conn.total_changes - before
        self.conn.executemany("DELETE FROM skipped WHERE relpath = ?", rows)
        return removed

    def clear_codes(self) -> None:
        """Forget every image (used when the collection is re-encoded with a new model)."""
        self.conn.execute("DELETE FROM images")
        self.conn.execute("DELETE FROM skipped")

    def all_codes(self, code_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, code) as int64 (n,) and float32 (n, code_size) arrays, in id order."""
        rows = self.conn.execute("SELECT id, code FROM images ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        codes = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), code_size)
        return ids, codes.astype(np.float32, copy=False)

    def relpaths(self) -> list[str]:
        """Every indexed path, in id order (the order of `all_codes`)."""
        return [r[0] for r in self.conn.execute("SELECT relpath FROM images ORDER BY id")]

    def ids_of(self, relpaths: list[str]) -> dict[str, int]:
        """relpath -> id for the given paths that are catalogued."""
        found: dict[str, int] = {}
        for start in range(0, len(relpaths), 500):  # SQLite caps the parameters of one statement
            chunk = relpaths[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(f"SELECT relpath, id FROM images WHERE relpath IN ({marks})", chunk))
        return found

    def code_of(self, image_id: int) -> np.ndarray | None:
        """The stored code of one image, or None."""
        row = self.conn.execute("SELECT code FROM images WHERE id = ?", (image_id,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<f4").astype(np.float32)

    def sketches(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """id -> (SKETCH_BYTES,) uint8 sketch, for the ids that exist and have one."""
        return {image_id: np.frombuffer(blob, dtype=np.uint8)
                for image_id, blob in self._rows_by_id("id, sketch", ids, "AND sketch IS NOT NULL")}

    def shortlist(self, ids: Iterable[int]) -> dict[int, tuple[str, np.ndarray | None]]:
        """id -> (relpath, sketch or None) for the ids that exist: what a search needs of its candidates, in one
        query (a search reads ~100 candidates to show 10, so every column and statement saved counts)."""
        return {image_id: (relpath, None if blob is None else np.frombuffer(blob, dtype=np.uint8))
                for image_id, relpath, blob in self._rows_by_id("id, relpath, sketch", ids)}

    def identical_files(self) -> list[list[int]]:
        """Ids of the images whose files have the same sha256, a list per content (ascending ids), when two or more."""
        rows = self.conn.execute("SELECT group_concat(id) FROM images GROUP BY sha256 HAVING COUNT(*) > 1")
        return [sorted(int(i) for i in ids.split(",")) for (ids,) in rows]

    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """id -> ImageRecord for the ids that exist."""
        return {r[0]: ImageRecord(*r) for r in self._rows_by_id("id, relpath, width, height, size, sha256", ids)}

    def _rows_by_id(self, columns: str, ids: Iterable[int], condition: str = "") -> Iterator[tuple]:
        """`columns` of the images with these ids (and `condition`), in statements of at most 500 ids: SQLite caps
        the parameters of one statement (32,766 on many builds)."""
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self.conn.execute(f"SELECT {columns} FROM images WHERE id IN ({marks}) {condition}", chunk)

    def recon_errors(self) -> np.ndarray:
        """The measured reconstruction errors (every image's, in catalogues built since they all are), (m,) float32."""
        rows = self.conn.execute("SELECT recon_error FROM images WHERE recon_error IS NOT NULL")
        return np.array([r[0] for r in rows], dtype=np.float32)

    def worst_reconstructed(self, n: int) -> list[tuple[int, str, float]]:
        """The `n` images with the largest measured reconstruction error: (id, relpath, error), worst first."""
        return self.conn.execute(
            "SELECT id, relpath, recon_error FROM images WHERE recon_error IS NOT NULL "
            "ORDER BY recon_error DESC, id LIMIT ?", (int(n),)).fetchall()

    def stats(self) -> dict:
        """Counts and sizes for `indexer info`."""
        images, total_bytes = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM images").fetchone()
        return {"images": images, "bytes": total_bytes, "generation": self.generation}
