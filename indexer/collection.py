"""A built collection opened for searching: verified encoder + catalogue + vectors, consistent with each other."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from encoder.store import ModelError, read_info
from indexer.catalog import Catalog
from indexer.copies import SHORTLIST, copy_first, sketches
from indexer.live import LiveVectors
from indexer.lock import CollectionBusy, exclusive
from indexer.vectors import VectorIndex, VectorsStale
from indexer.writes import CollectionWriter

if TYPE_CHECKING:  # the type only: importing this module stays free of TensorFlow
    from encoder.embed import Encoder

log = logging.getLogger(__name__)

MODEL_KEY = "model_sha256"
CALIBRATION_SAMPLE = 1000  # codes whose 10th-neighbour distance sets the score scale


def check_model_matches(catalog: Catalog, model_sha256: str, index_dir: str | os.PathLike) -> None:
    """Refuse an encoder other than the one that made the catalogue's codes."""
    recorded = catalog.get_meta(MODEL_KEY)
    if recorded and recorded != model_sha256 and catalog.count():
        raise ModelError(
            f"the codes in {index_dir} were made by model sha256:{recorded[:12]}, but its encoder.keras is "
            f"sha256:{model_sha256[:12]}; codes from different models cannot be compared. Restore the original "
            "encoder, or re-encode everything with `python -m indexer build IMAGES_DIR --index "
            f"{index_dir} --retrain`."
        )


def calibration(vectors: VectorIndex, codes: np.ndarray, errors: np.ndarray) -> dict:
    """What the service needs to present results, measured once per generation instead of at every start-up.

    score_scale: the median distance to the 10th neighbour (the distance that scores 0.5);
    error_quantiles: the collection's reconstruction errors at every 0.1%, to place a query's error among them.
    """
    scale = 1.0
    if len(codes) >= 2:
        rows = np.random.default_rng(0).choice(len(codes), min(CALIBRATION_SAMPLE, len(codes)), replace=False)
        distances, _ = vectors.search(codes[rows], min(11, len(codes)))  # (m, <=11)
        scale = float(np.median(distances[:, -1])) or 1.0
    quantiles = np.quantile(errors, np.linspace(0, 1, 1001)).tolist() if len(errors) else []
    return {"score_scale": scale, "error_quantiles": quantiles}


def load_vectors(catalog: Catalog, index_dir: str | os.PathLike, code_size: int, save: bool) -> VectorIndex:
    """The saved vectors if they match the catalogue's generation, else rebuilt from the catalogue."""
    generation = catalog.generation
    try:
        return VectorIndex.load(index_dir, generation)
    except VectorsStale as why:
        log.info("building vectors from the catalogue: %s", why)
    ids, codes = catalog.all_codes(code_size)
    vectors = VectorIndex.build(ids, codes, generation)
    vectors.meta["calibration"] = calibration(vectors, codes, catalog.recon_errors())
    if save:
        vectors.save(index_dir)
    return vectors


def _load_or_refresh(catalog: Catalog, index_dir: Path, code_size: int, save: bool) -> VectorIndex:
    if save:
        try:
            return VectorIndex.load(index_dir, catalog.generation)
        except VectorsStale:
            pass
        try:
            # Under the collection's write lock, so that neither a build nor another server changes the catalogue
            # between reading its codes and committing the vectors made from them.
            with exclusive(index_dir):
                return load_vectors(catalog, index_dir, code_size, save=True)
        except (CollectionBusy, OSError) as why:
            log.warning("the vectors are older than the catalogue and cannot be saved now (%s): rebuilding them in "
                        "memory for this run", why)
    return load_vectors(catalog, index_dir, code_size, save=False)


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    path: str  # relative to the indexed folder
    distance: float  # Euclidean distance between codes
    copy: bool = False  # an edited copy of the query (or its original), put first by the copy check


@dataclass
class Collection:
    """Everything a search needs, loaded once."""

    index_dir: Path
    encoder: Encoder  # loaded in open(); embed imports TensorFlow only when a model loads
    _catalog: Catalog  # read-only; callers ask the methods below, which hold the lock
    vectors: LiveVectors  # the saved index plus writes made while serving
    # One SQLite connection is shared by the server's threads; the lock keeps their statements apart.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, index_dir: str | os.PathLike, save_stale: bool = False) -> Collection:
        """Open a collection for searching; raise ModelError or FileNotFoundError with advice when it cannot be used.

        The catalogue is opened read-only. Vectors older than the catalogue (HTTP writes since the last build) are
        rebuilt from it; with `save_stale` they are also saved, so that the next start does not rebuild them again.
        """
        from encoder.embed import Encoder

        index_dir = Path(index_dir)
        catalog = Catalog(index_dir, readonly=True)
        try:
            # The catalogue's stamp first: a model swapped together with its encoder.json is refused unopened.
            check_model_matches(catalog, read_info(index_dir)["sha256"], index_dir)
            encoder = Encoder.load(index_dir)  # hashes encoder.keras against encoder.json before loading it
            check_model_matches(catalog, encoder.sha256, index_dir)
            vectors = LiveVectors(_load_or_refresh(catalog, index_dir, encoder.code_size, save_stale))
        except BaseException:
            catalog.close()
            raise
        return cls(index_dir, encoder, catalog, vectors)

    def __len__(self) -> int:
        """Images searchable now, writes made while serving included."""
        return len(self.vectors)

    @property
    def images_root(self) -> Path | None:
        """The indexed folder, as recorded by the last build."""
        with self._lock:
            root = self._catalog.get_meta("root")
        return Path(root) if root else None

    @property
    def calibration(self) -> dict:
        """The score scale and error quantiles measured for this generation ({} when never measured)."""
        return dict(self.vectors.meta.get("calibration", {}))

    def writer(self) -> CollectionWriter | None:
        """A writer that adds and removes images of this collection while it is searched; None when the catalogue
        records no image folder to store uploads in."""
        root = self.images_root
        return None if root is None else CollectionWriter(self.index_dir, root, self.encoder, self.vectors)

    def encode_image(self, source) -> tuple[np.ndarray, float, np.ndarray]:
        """Preprocess and encode one image (path, bytes or file): its (code_size,) code, reconstruction error and
        (SKETCH_BYTES,) sketch."""
        from encoder.preprocess import load_image

        pixels = load_image(source, self.encoder.image_size, self.encoder.channels).pixels[None]  # (1, S, S, C)
        codes, errors = self.encoder.encode_with_error(pixels)
        return codes[0], float(errors[0]), sketches(pixels)[0]

    def sketch_of(self, image_id: int) -> np.ndarray | None:
        """The stored sketch of an indexed image, or None."""
        with self._lock:
            return self._catalog.sketches([image_id]).get(image_id)

    def code_of(self, image_id: int) -> np.ndarray | None:
        """The stored code of an indexed image, or None for an unknown id."""
        with self._lock:
            return self._catalog.code_of(image_id)

    def relpath_of(self, image_id: int) -> str | None:
        """The path of an indexed image relative to the indexed folder, or None for an unknown id."""
        with self._lock:
            record = self._catalog.records([image_id]).get(image_id)
        return None if record is None else record.relpath

    def neighbours(self, code: np.ndarray, k: int, offset: int = 0, exclude: int | None = None,
                   sketch: np.ndarray | None = None) -> list[Hit]:
        """The `k` images nearest to `code` after skipping `offset`, nearest first, leaving out id `exclude`.

        With the query's `sketch`, the copy check (indexer.copies) looks at the first SHORTLIST candidates and puts
        an edited copy of the query first, flagged `copy`; the rest keep the codes' order.
        """
        wanted = max(k + offset, SHORTLIST if sketch is not None else 0) + (exclude is not None)
        while True:
            distances, ids = self.vectors.search(code[None], wanted)  # (1, wanted) each
            pairs = [(float(d), int(i)) for d, i in zip(distances[0], ids[0]) if i >= 0 and i != exclude]
            with self._lock:
                records = self._catalog.records(i for _, i in pairs)
                found_sketches = self._catalog.sketches(i for _, i in pairs) if sketch is not None else {}
            # An image being removed leaves the catalogue (the commit point) a moment before the vectors: skip it,
            # and ask for as many more as were skipped so that a full page stays full.
            missing = sum(i not in records for _, i in pairs)
            live = [(d, i) for d, i in pairs if i in records]
            if missing and len(live) < k + offset and not (ids[0] < 0).any():
                wanted += missing
                continue
            copy = None
            if sketch is not None:
                checked = [j for j, (_, i) in enumerate(live) if i in found_sketches]
                if len(checked) >= 2:
                    order, found = copy_first(np.asarray(checked), sketch,
                                              np.stack([found_sketches[live[j][1]] for j in checked]))
                    if found is not None:
                        copy = live[order[0]][1]
                        live = [live[order[0]]] + [p for p in live if p[1] != copy]
            hits = [Hit(i, records[i].relpath, d, copy=i == copy) for d, i in live]
            return hits[offset : offset + k]

    def close(self) -> None:
        """Release the catalogue connection."""
        self._catalog.close()
