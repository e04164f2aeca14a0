"""A built collection opened for searching: verified encoder + catalogue + vectors, consistent with each other."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from encoder.store import ModelError, read_info
from indexer.catalog import MODEL_KEY, Catalog
from indexer.copies import SHORTLIST, copy_first, sketches
from indexer.duplicates import (
    COPY_EDITS,
    COPY_SAMPLE,
    DEFAULT_CHECK,
    Duplicates,
    candidate_pairs,
    checked_groups,
    code_limit,
    duplicate_groups,
    parse_check,
    suggest_threshold,
)
from indexer.live import LiveVectors
from indexer.lock import CollectionBusy, exclusive
from indexer.neighbours import NeighbourGraph, collection_graph, distance_quantiles, neighbour_graph
from indexer.pixelcheck import PairScores
from indexer.projection import DEFAULT_METHOD, CollectionMap, folder_groups, project
from indexer.vectors import VectorIndex, VectorsStale
from indexer.writes import CollectionWriter

if TYPE_CHECKING:  # the type only: importing this module stays free of TensorFlow
    from encoder.embed import Encoder

log = logging.getLogger(__name__)

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


def calibration(vectors: VectorIndex, ids: np.ndarray, codes: np.ndarray, errors: np.ndarray) -> dict:
    """What the service needs to present results, measured once per generation instead of at every start-up.

    score_scale: the median distance to the 10th neighbour (the distance that scores 0.5);
    nn_quantiles: the nearest-neighbour distances at every 0.1%, the scale of a hit's percentile
    (indexer.neighbours.percentile); error_quantiles: the reconstruction errors at every 0.1%, to place a
    query's error among them.
    """
    scale, nearest = 1.0, np.zeros(0)
    if len(codes) >= 2:
        rows = np.random.default_rng(0).choice(len(codes), min(CALIBRATION_SAMPLE, len(codes)), replace=False)
        graph = neighbour_graph(vectors, ids[rows], codes[rows], k=min(10, len(codes) - 1))
        tenth = graph.distances[:, -1]
        scale = float(np.median(tenth[np.isfinite(tenth)])) or 1.0
        nearest = graph.nearest
    quantiles = np.quantile(errors, np.linspace(0, 1, 1001)).tolist() if len(errors) else []
    return {"score_scale": scale, "nn_quantiles": distance_quantiles(nearest), "error_quantiles": quantiles}


def load_vectors(catalog: Catalog, index_dir: str | os.PathLike, code_size: int, save: bool) -> VectorIndex:
    """The saved vectors if they match the catalogue's generation, else rebuilt from the catalogue."""
    generation = catalog.generation
    try:
        return VectorIndex.load(index_dir, generation)
    except VectorsStale as why:
        log.info("building vectors from the catalogue: %s", why)
    ids, codes = catalog.all_codes(code_size)
    vectors = VectorIndex.build(ids, codes, generation)
    vectors.meta["calibration"] = calibration(vectors, ids, codes, catalog.recon_errors())
    if save:
        vectors.save(index_dir)
    return vectors


def _load_or_refresh(catalog: Catalog, index_dir: Path, code_size: int, save: bool,
                     rebuild_if_busy: bool = True) -> VectorIndex:
    try:
        return VectorIndex.load(index_dir, catalog.generation)
    except VectorsStale:
        pass
    if save:
        try:
            # Under the collection's write lock, so that neither a build nor another server changes the catalogue
            # between reading its codes and committing the vectors made from them.
            with exclusive(index_dir):
                catalog.hold_snapshot()  # the catalogue as it is under the lock, not as it was before it
                return load_vectors(catalog, index_dir, code_size, save=True)
        except (CollectionBusy, OSError) as why:
            if not rebuild_if_busy:
                if isinstance(why, OSError):  # not a build at work: a problem the operator should hear of
                    log.warning("the vectors are older than the catalogue and cannot be saved: %s", why)
                raise CollectionBusy(f"the vectors are older than the catalogue and cannot be saved now ({why})") \
                    from None
            log.warning("the vectors are older than the catalogue and cannot be saved now (%s): rebuilding them in "
                        "memory for this run", why)
    elif not rebuild_if_busy and _build_running(index_dir):
        raise CollectionBusy("a build is writing the catalogue; its vectors come when it ends")
    return load_vectors(catalog, index_dir, code_size, save=False)


def _build_running(index_dir: Path) -> bool:
    """Whether a writer (a build) holds the collection's lock now."""
    try:
        with exclusive(index_dir):
            return False
    except CollectionBusy:
        return True
    except OSError:  # a read-only collection folder: nobody can be writing it
        return False


def _with_current_calibration(catalog: Catalog, vectors: VectorIndex) -> VectorIndex:
    """Vectors saved before the percentile scale existed get their calibration measured again, in memory."""
    if "nn_quantiles" not in vectors.meta.get("calibration", {"nn_quantiles": None}):
        log.info("measuring this collection's nearest-neighbour distances (saved by an older version)")
        ids, codes = catalog.all_codes(vectors.dimension)
        vectors.meta["calibration"] = calibration(vectors, ids, codes, catalog.recon_errors())
    return vectors


@dataclass(frozen=True)
class Outlier:
    """An image the model rebuilds badly: its reconstruction error, and the share of the collection rebuilt better."""

    id: int
    path: str
    error: float  # mean squared error per pixel, in [0, 1]
    percentile: float  # 0-100: the share of measured images with a smaller error


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
    # Views of the whole collection (neighbour graph, map), each computed once per catalogue generation.
    _views: dict = field(default_factory=dict, repr=False)
    _views_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The duplicates' pixel check (minutes on a large collection) has its own lock, so that it holds up no other view.
    _pixels_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, index_dir: str | os.PathLike, save_stale: bool = False, encoder: Encoder | None = None,
             rebuild_if_busy: bool = True) -> Collection:
        """Open a collection for searching; raise ModelError or FileNotFoundError with advice when it cannot be used.

        The catalogue is opened read-only. Vectors older than the catalogue (HTTP writes since the last build) are
        rebuilt from it; with `save_stale` they are also saved, so that the next start does not rebuild them again.
        `encoder`, an already loaded encoder, is used if it is the collection's model. Without `rebuild_if_busy`,
        stale vectors that cannot be saved because a build holds the collection raise CollectionBusy instead of being
        rebuilt in memory (a running server waits for the build's own vectors).
        """
        from encoder.embed import Encoder

        index_dir = Path(index_dir)
        catalog = Catalog(index_dir, readonly=True)
        try:
            # Searches read the catalogue as of the vectors' generation: a build committing the next generation's
            # rows (a --retrain clears them all) changes nothing they see until the server switches to it.
            catalog.hold_snapshot()
            # The catalogue's stamp first: a model swapped together with its encoder.json is refused unopened.
            model_sha256 = read_info(index_dir)["sha256"]
            check_model_matches(catalog, model_sha256, index_dir)
            if encoder is None or encoder.sha256 != model_sha256:
                encoder = Encoder.load(index_dir)  # hashes encoder.keras against encoder.json before loading it
            check_model_matches(catalog, encoder.sha256, index_dir)
            saved = _load_or_refresh(catalog, index_dir, encoder.code_size, save_stale, rebuild_if_busy)
            vectors = LiveVectors(_with_current_calibration(catalog, saved))
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
        return None if root is None else CollectionWriter(self.index_dir, root, self.encoder, self.vectors,
                                                          self.catch_up)

    def renew_snapshot(self) -> bool:
        """Read the catalogue as it is now if no build is writing it (a build's rows wait for its vectors); True when
        renewed. A caller that writes holds its own writes off meanwhile."""
        try:
            with exclusive(self.index_dir):  # held for a moment: nobody commits while the snapshot is taken
                self.catch_up()
            return True
        except (CollectionBusy, OSError):  # a build is running, or the folder is read-only to us: keep the snapshot
            return False

    def catch_up(self) -> None:
        """Read the catalogue as it is now: called after this server's own writes commit (no build runs then, as
        writes and builds share the collection's lock), so that searches see them."""
        with self._lock:
            self._catalog.hold_snapshot()

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
                records = self._catalog.shortlist(i for _, i in pairs)
            # An image being removed leaves the catalogue (the commit point) a moment before the vectors: skip it,
            # and ask for as many more as were skipped so that a full page stays full.
            missing = sum(i not in records for _, i in pairs)
            live = [(d, i) for d, i in pairs if i in records]
            # Asking for more is pointless once every code has been asked for (the index pads no -1 then).
            if missing and len(live) < k + offset and not (ids[0] < 0).any() and wanted < len(self.vectors):
                wanted += missing
                continue
            copy = None
            if sketch is not None:
                found_sketches: dict[int, np.ndarray] = {}
                for _, i in live:
                    if (kept := records[i][1]) is not None:
                        found_sketches[i] = kept
                checked = [j for j, (_, i) in enumerate(live) if i in found_sketches]
                if len(checked) >= 2:
                    order, found = copy_first(np.asarray(checked), sketch,
                                              np.stack([found_sketches[live[j][1]] for j in checked]))
                    if found is not None:
                        copy = live[order[0]][1]
                        live = [live[order[0]]] + [p for p in live if p[1] != copy]
            return [Hit(i, records[i][0], d, copy=i == copy) for d, i in live[offset : offset + k]]

    # Collection-wide views --------------------------------------------------------------------------------------

    def generation(self) -> int:
        """The catalogue's generation: it moves with every committed change, HTTP writes included."""
        with self._lock:
            return self._catalog.generation

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image's (id,) and (id, code_size) code, in id order, from the catalogue."""
        with self._lock:
            return self._catalog.all_codes(self.encoder.code_size)

    def relpaths(self, ids: Iterable[int]) -> dict[int, str]:
        """id -> path for the ids that exist."""
        with self._lock:
            return {i: r.relpath for i, r in self._catalog.records(ids).items()}

    def graph(self) -> tuple[NeighbourGraph, dict[int, np.ndarray]]:
        """The neighbour graph of every image and the codes it was made from; measured once per generation."""
        with self._views_lock:  # one thread measures; the others wait for its result instead of measuring too
            generation = self.generation()
            cached = self._views.get("graph")
            if cached is None or cached[0] != generation:
                ids, codes = self.codes()
                started = time.perf_counter()
                graph = collection_graph(ids, codes, self.vectors)
                log.info("neighbour graph of %d images in %.1f s", len(ids), time.perf_counter() - started)
                cached = (generation, graph, dict(zip(ids.tolist(), codes)))
                self._views["graph"] = cached
            return cached[1], cached[2]

    def copy_distances(self) -> np.ndarray:
        """(m,) distances between the codes of a sample of the collection's images and of their edited copies (mild
        everyday edits, indexer.duplicates.COPY_EDITS); measured once per generation, empty without readable files."""
        with self._views_lock:
            generation = self.generation()
            cached = self._views.get("copies")
            if cached is None or cached[0] != generation:
                cached = (generation, self._measure_copy_distances())
                self._views["copies"] = cached
            return cached[1]

    def _measure_copy_distances(self) -> np.ndarray:
        from encoder.augment import Edits
        from encoder.preprocess import ImageError, load_image

        root = self.images_root
        ids, _ = self.codes()
        if root is None or not len(ids):
            return np.zeros(0, np.float32)
        chosen = ids[np.linspace(0, len(ids) - 1, min(COPY_SAMPLE, len(ids))).astype(int)]
        paths = self.relpaths(chosen.tolist())
        size, channels = self.encoder.image_size, self.encoder.channels
        pixels = []
        for image_id in chosen.tolist():
            try:
                pixels.append(load_image(root / paths[image_id], size, channels).pixels)
            except (ImageError, OSError, KeyError):  # removed or changed since it was indexed: sample the rest
                continue
        if not pixels:
            return np.zeros(0, np.float32)
        clean = np.stack(pixels)  # (m, S, S, C) uint8
        edits = Edits(COPY_EDITS, seed=0)  # the same draws at every measurement
        views = [np.clip(np.round(np.asarray(edits(clean.astype(np.float32) / 255.0, training=True)) * 255), 0, 255)
                 .astype(np.uint8) for _ in range(2)]  # two edited copies of each, (m, S, S, C) each
        original = self.encoder.encode(clean)  # (m, code_size)
        return np.concatenate([np.linalg.norm(self.encoder.encode(v) - original, axis=1) for v in views])

    def duplicates(self, threshold: float | None = None, check: str = DEFAULT_CHECK) -> Duplicates:
        """Groups of near-duplicates, largest first, at code distance `threshold` (None: the suggested one),
        confirmed by the pixel check or (check "none") by the codes alone; see indexer.duplicates."""
        check = parse_check(check)
        graph, codes = self.graph()
        copies = self.copy_distances()
        if check == "none":
            suggested = suggest_threshold(graph.nearest, copies)
            used = suggested if threshold is None else float(threshold)
            return Duplicates(duplicate_groups(graph, codes, used), used, suggested, check)
        suggested = code_limit(graph.nearest, copies)
        used = suggested if threshold is None else float(threshold)
        with self._pixels_lock:  # one thread checks a generation's pairs; the others wait and reuse its scores
            pairs = [(a, b) for a, b in self._candidates(graph, used) if a in codes and b in codes]
            involved = {i for pair in pairs for i in pair}
            scores = self._pair_scores(involved)
            started = time.perf_counter()
            scores.measure(pairs)
            groups = checked_groups(pairs, scores, codes)
            unreadable = len(scores.unreadable & involved)
        log.info("pixel check of %d candidate pairs: %d groups in %.1f s", len(pairs), len(groups),
                 time.perf_counter() - started)
        return Duplicates(groups, used, suggested, check, len(pairs), unreadable)

    def _candidates(self, graph: NeighbourGraph, limit: float) -> list[tuple[int, int]]:
        """The pairs worth a pixel check at code distance `limit` (indexer.duplicates.candidate_pairs, and files with
        the same content); the last limit's are kept for the generation."""
        generation = self.generation()
        cached = self._views.get("candidates")
        if cached is None or cached[:2] != (generation, limit):
            with self._lock:
                sketches_by_id = self._catalog.sketches(graph.ids.tolist())
                identical = self._catalog.identical_files()
            pairs = candidate_pairs(graph, sketches_by_id, limit)
            pairs.update((same[0], other) for same in identical for other in same[1:])
            cached = (generation, limit, sorted(pairs))
            self._views["candidates"] = cached
        return cached[2]

    def _pair_scores(self, ids: set[int]) -> PairScores:
        """The generation's pixel-check scores (indexer.pixelcheck), able to check pairs among `ids`."""
        generation = self.generation()
        cached = self._views.get("pixels")
        if cached is None or cached[0] != generation:
            cached = (generation, PairScores({}, {}))
            self._views["pixels"] = cached
        scores = cached[1]
        wanted = [i for i in ids if i not in scores.digests]
        if wanted:
            root = self.images_root
            if root is None:
                log.warning("the catalogue records no image folder: the pixel check can read no file")
            with self._lock:
                records = self._catalog.records(wanted)
            for i, record in records.items():
                scores.digests[i] = record.sha256
                if root is not None:
                    scores.files[i] = root / record.relpath
        return scores

    def outliers(self, n: int) -> tuple[list[Outlier], int]:
        """The `n` images rebuilt worst, worst first, and how many images have a measured error."""
        with self._lock:
            errors = np.sort(self._catalog.recon_errors())  # (m,)
            worst = self._catalog.worst_reconstructed(n)
        measured = len(errors)
        found = [Outlier(i, path, float(e), round(100.0 * float(np.searchsorted(errors, e, "left")) / measured, 2))
                 for i, path, e in worst]
        return found, measured

    def map(self, method: str = DEFAULT_METHOD) -> CollectionMap:
        """Every image's place on a 2-D map of the codes; computed once per generation and method."""
        with self._views_lock:
            generation = self.generation()
            cached = self._views.get(("map", method))
            if cached is None or cached.generation != generation:
                with self._lock:  # codes and paths of the same moment, both in id order
                    ids, codes = self._catalog.all_codes(self.encoder.code_size)
                    paths = self._catalog.relpaths()
                group, groups = folder_groups(paths)
                cached = CollectionMap(ids, project(codes, method), group, groups, method, generation)
                self._views[("map", method)] = cached
            return cached

    def close(self) -> None:
        """Release the catalogue connection."""
        self._catalog.close()
