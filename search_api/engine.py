"""Engine: a collection loaded once, answering searches by image, by id, and serving images by id."""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoder.preprocess import ImageError
from encoder.store import ModelError
from indexer.collection import Collection, Hit
from indexer.copies import sketches
from indexer.duplicates import DEFAULT_CHECK
from indexer.explore import duplicates_report, outliers_report
from indexer.lock import CollectionBusy
from indexer.neighbours import percentile
from indexer.vectors import saved_generation
from indexer.writes import Added, CollectionWriter
from search_api.batcher import MicroBatcher

log = logging.getLogger(__name__)

# Models trained before encoder.novelty existed: a query reconstructed worse than this share of the collection
# is "unlike" it (the only rule they can have; it flags digits, not simple images, and ~3% of unseen photos).
UNUSUAL_PERCENTILE = 99.0
OLD_BATCHER_GRACE = 60.0  # seconds an old model's query batcher keeps running after a switch to a new model


class NotFound(LookupError):
    """An id that is not in the collection, or whose file is gone."""


@dataclass(frozen=True)
class SearchResult:
    """Hits plus what a caller needs to present them."""

    hits: list[Hit]
    took_ms: float
    served: Served  # the generation that answered: its score scale and percentiles present the hits
    query: dict[str, Any] | None = None


@dataclass(frozen=True)
class Served:
    """One generation of the collection as it is served; a switch replaces it whole, so a request that took it
    answers from one generation start to end."""

    collection: Collection
    batcher: MicroBatcher  # the encoder pass of queries, batched; one per loaded encoder
    scale: float  # the distance that scores 0.5 (indexer.collection.calibration)
    error_quantiles: np.ndarray  # (1001,) or (0,)
    nn_quantiles: np.ndarray  # (1001,) or (0,)

    @property
    def generation(self) -> int:
        """The catalogue generation of the saved vectors being served (writes made since are on top of them)."""
        return self.collection.vectors.generation

    def score(self, distance: float) -> float:
        """Similarity in (0, 1]: 1 for identical codes, 0.5 at the typical 10th-neighbour distance."""
        return math.exp(-math.log(2) * distance / self.scale)

    def percentiles(self, distances: list[float]) -> list[float]:
        """0-100 for each distance: the share of the collection's nearest-neighbour distances larger than it, in one
        pass (a page of hits costs one interpolation, not ten)."""
        values = np.atleast_1d(percentile(np.asarray(distances, np.float64), self.nn_quantiles))
        return [round(float(v), 2) for v in values]


class Engine:
    """Thread-safe search over one collection; everything heavy is loaded in the constructor, once.

    It follows its collection: `follow()` (called every few seconds by a thread from `start_following`) switches to
    the vectors a build has published since, reusing the loaded encoder unless the build retrained it. Requests take
    the served generation once (`self._served`) and finish on it; the switch is one assignment.
    """

    def __init__(self, index_dir: str | os.PathLike, thumbnail_size: int = 256, writable: bool = False):
        self.index_dir = Path(index_dir)
        self.writable = writable
        collection = Collection.open(index_dir, save_stale=writable)  # a writing server keeps its writes' vectors
        self.thumbnail_size = thumbnail_size
        self._served = self._serve(collection)
        self.writer = collection.writer() if writable else None
        self._thumbnail = functools.lru_cache(maxsize=4096)(self._make_thumbnail)
        self.switches = 0  # generations switched to since start-up, for /metrics
        self._switching = threading.Lock()
        self._following: tuple[threading.Thread, threading.Event] | None = None
        log.info("engine ready: %d images, generation %d, model %s, score scale %.4f", self.images,
                 self._served.generation, self.model_id[:19], self._served.scale)

    @staticmethod
    def _serve(collection: Collection, previous: Served | None = None) -> Served:
        """What requests need from `collection`; the previous generation's batcher is kept when the encoder is."""
        # Measured at build time for this generation (see indexer.collection.calibration): start-up reads no codes.
        calibration = collection.calibration
        if previous is not None and previous.collection.encoder is collection.encoder:
            batcher = previous.batcher
        else:
            encoder = collection.encoder
            # First calls trace graphs or allocate buffers (TensorFlow: ~0.2 s): paid here, not by a user's query.
            blank = np.zeros((1, encoder.image_size, encoder.image_size, encoder.channels), np.uint8)
            encoder.encode_for_query(blank)
            encoder.encode_with_latents(blank)
            # Queries that skip the out-of-domain check (unusual=false) skip the decoder too.
            batcher = MicroBatcher({"query": encoder.encode_for_query, "codes": encoder.encode_with_latents})
        return Served(collection, batcher, float(calibration.get("score_scale", 1.0)) or 1.0,
                      np.asarray(calibration.get("error_quantiles", []), np.float64),
                      np.asarray(calibration.get("nn_quantiles", []), np.float64))

    @property
    def served(self) -> Served:
        """The generation served now; take it once to answer from one generation."""
        return self._served

    @property
    def collection(self) -> Collection:
        """The collection being served now."""
        return self._served.collection

    @property
    def generation(self) -> int:
        """The catalogue generation whose saved vectors are served (see Served.generation)."""
        return self._served.generation

    # Following the collection ---------------------------------------------------------------------------------

    def follow(self) -> bool:
        """Switch to the vectors a build published since the served ones, if any; True when it switched.

        Nothing a request holds is closed: a request that took the old generation finishes on it. The switch is
        skipped (and tried again at the next call) while a build is still writing. With nothing to switch to, the
        searches' catalogue snapshot is renewed when no build is writing: they see other servers' writes, and the
        WAL that the snapshot pins can be checkpointed.
        """
        saved = saved_generation(self.index_dir)
        if saved is None or saved <= self.generation:
            with self._paused_writes():
                self.collection.renew_snapshot()
            return False
        with self._switching, self._paused_writes():  # no write of ours can land between the open and the switch
            old = self._served
            try:
                collection = Collection.open(self.index_dir, save_stale=self.writable, encoder=old.collection.encoder,
                                             rebuild_if_busy=False)
            except CollectionBusy as why:
                log.debug("generation %d is not ready to serve yet: %s", saved, why)
                return False
            except (ModelError, OSError) as why:  # broken, foreign or unreadable: keep serving the last good one
                log.warning("not switching to generation %d: %s", saved, why)
                return False
            new = self._serve(collection, old)
            if self.writer is not None:
                self.writer.retarget(collection.encoder, collection.vectors, collection.catch_up)
            self._served = new
            self.switches += 1
        if new.batcher is not old.batcher:
            # Requests that took the old generation may still be encoding on its batcher: it finishes what it was
            # given, and encodes whatever comes after it is closed in the caller's thread (MicroBatcher.close).
            closing = threading.Timer(OLD_BATCHER_GRACE, old.batcher.close)
            closing.daemon = True
            closing.start()
        log.info("now serving generation %d: %d images%s", new.generation, len(collection),
                 "" if new.batcher is old.batcher else f", new model {collection.encoder.model_id[:19]}")
        return True

    def _paused_writes(self) -> contextlib.AbstractContextManager:
        """Hold off this server's HTTP writes (none when it takes none)."""
        return self.writer.paused() if self.writer is not None else contextlib.nullcontext()

    def start_following(self, every: float) -> None:
        """Call follow() every `every` seconds in a daemon thread until close() (0: never)."""
        if every <= 0 or self._following is not None:
            return
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every):
                try:
                    self.follow()
                except Exception:  # noqa: BLE001 - the follower must outlive one bad attempt; it tries again
                    log.exception("following the collection failed; trying again in %.0f s", every)

        thread = threading.Thread(target=run, name="lookalike-follower", daemon=True)
        thread.start()
        self._following = (thread, stop)

    @property
    def images(self) -> int:
        """Images in the collection now: the searchable ones, so it moves with every write as searches do."""
        return len(self.collection)

    @property
    def model_id(self) -> str:
        """'sha256:<hex>' of the encoder."""
        return self.collection.encoder.model_id

    def _unusualness(self, served: Served, pixels: np.ndarray, error: float, latent: np.ndarray) -> dict[str, Any]:
        """What the model makes of a query: its error, each out-of-domain signal's percentile, which fired."""
        quantiles = served.error_quantiles
        percentile = 0.0
        if len(quantiles):  # the share of the collection reconstructed better, interpolated between 0.1% steps
            percentile = float(np.interp(error, quantiles, np.linspace(0, 100, len(quantiles))))
        facts = {"reconstruction_error": round(error, 6), "error_percentile": round(float(percentile), 2)}
        judged = served.collection.encoder.judge(pixels[None], np.array([error]), latent[None])
        if judged is None:
            reasons = ["error"] if percentile > UNUSUAL_PERCENTILE else []
            return facts | {"unusual": bool(reasons), "reasons": reasons, "signals": {}}
        return facts | {"unusual": bool(judged[0]["fired"]), "reasons": judged[0]["fired"],
                        "signals": judged[0]["signals"]}

    def search_image(self, data: bytes, k: int, offset: int = 0, unusual: bool = True) -> SearchResult:
        """Neighbours of an uploaded image; raises encoder.preprocess.ImageError for a bad one.

        `unusual`: also judge whether the query is like the collection's images (the decoder's pass: 3-4x the
        encoder's cost); without it the result has no `query`."""
        started = time.perf_counter()
        from encoder.preprocess import load_image

        served = self._served  # one generation for the whole request
        encoder = served.collection.encoder
        # Decoding runs in the request's thread (in parallel); the encoder pass is batched with concurrent queries.
        pixels = load_image(data, encoder.image_size, encoder.channels).pixels  # (S, S, C)
        query = None
        if unusual:
            code, error, latent = served.batcher.encode(pixels, "query")  # (d,), (), (d,)
            query = self._unusualness(served, pixels, float(error), latent)
        else:
            code, _ = served.batcher.encode(pixels, "codes")
        hits = served.collection.neighbours(code, k, offset, sketch=sketches(pixels[None])[0])
        return SearchResult(hits, (time.perf_counter() - started) * 1000, served, query)

    def search_id(self, image_id: int, k: int, offset: int = 0) -> SearchResult:
        """Neighbours of an indexed image, the image itself left out."""
        started = time.perf_counter()
        served = self._served
        code = served.collection.code_of(image_id)
        if code is None:
            raise NotFound(f"no image with id {image_id}")
        hits = served.collection.neighbours(code, k, offset, exclude=image_id,
                                            sketch=served.collection.sketch_of(image_id))
        return SearchResult(hits, (time.perf_counter() - started) * 1000, served)

    def image_path(self, image_id: int) -> Path:
        """The file of an indexed image, guaranteed to lie inside the indexed folder."""
        collection = self.collection
        relpath = collection.relpath_of(image_id)
        root = collection.images_root
        if relpath is None or root is None:
            raise NotFound(f"no image with id {image_id}")
        path = (root / relpath).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise NotFound(f"the file of image {image_id} is no longer available; re-run the indexer")
        return path

    def thumbnail(self, image_id: int) -> bytes:
        """JPEG thumbnail bytes, cached per file version."""
        path = self.image_path(image_id)
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:  # removed since image_path looked
            raise NotFound(f"the file of image {image_id} is no longer available; re-run the indexer") from None
        try:
            return self._thumbnail(path, mtime_ns)
        except ImageError as exc:
            # A file that no longer decodes is the server's problem, not the client's: the reason stays in the log (it
            # can name the file, and server paths are not for clients) and the client hears the image is gone.
            log.warning("thumbnail of image %d: %s", image_id, exc)
            raise NotFound(f"the file of image {image_id} can no longer be read; re-run the indexer") from None

    def _make_thumbnail(self, path: Path, mtime_ns: int) -> bytes:
        from encoder.preprocess import thumbnail_jpeg

        return thumbnail_jpeg(path, self.thumbnail_size)

    def add_images(self, uploads: list[tuple[str, bytes]]) -> list[Added]:
        """Store and index uploaded images (all or none); raises BadUpload or WriteBusy."""
        return self._require_writer().add(uploads)

    def remove_image(self, image_id: int) -> str:
        """Remove an image from the collection; returns its path; raises NotFound or WriteBusy."""
        relpath = self._require_writer().remove(image_id)
        if relpath is None:
            raise NotFound(f"no image with id {image_id}")
        return relpath

    def _require_writer(self) -> CollectionWriter:
        if self.writer is None:
            raise PermissionError("writes are disabled on this server")
        return self.writer

    # Views of the whole collection --------------------------------------------------------------------------

    def duplicates(self, threshold: float | None = None, limit: int = 100,
                   check: str = DEFAULT_CHECK) -> dict[str, Any]:
        """Groups of near-duplicates, largest first (at most `limit`), at `threshold` (None: the suggested one),
        confirmed by `check` (indexer.duplicates.CHECKS)."""
        report = duplicates_report(self.collection, threshold, limit, check)
        for group in report["groups"]:
            for member in group["members"]:
                member["thumbnail"] = f"/api/images/{member['id']}/thumbnail"
        return report

    def outliers(self, n: int) -> dict[str, Any]:
        """The `n` images the model rebuilds worst, worst first."""
        report = outliers_report(self.collection, n)
        for r in report["results"]:
            r["thumbnail"] = f"/api/images/{r['id']}/thumbnail"
            r["reconstruction"] = f"/api/images/{r['id']}/reconstruction"
        return report

    def reconstruction(self, image_id: int) -> bytes:
        """PNG of what the model makes of an indexed image, at the model's input size."""
        path = self.image_path(image_id)
        try:
            return self.reconstruct(path)
        except ImageError as exc:  # as for thumbnails: the reason stays in the log
            log.warning("reconstruction of image %d: %s", image_id, exc)
            raise NotFound(f"the file of image {image_id} can no longer be read; re-run the indexer") from None

    def reconstruct(self, source) -> bytes:
        """PNG of what the model makes of an image (path or bytes); raises ImageError for a bad one."""
        from encoder.preprocess import load_image, png_bytes

        encoder = self.collection.encoder
        pixels = load_image(source, encoder.image_size, encoder.channels).pixels  # (S, S, C)
        return png_bytes(encoder.reconstruct(pixels[None])[0])

    def map(self, method: str) -> dict[str, Any]:
        """Every image's place on a 2-D map of the codes, as parallel arrays (compact at 100,000 points)."""
        points = self.collection.map(method)
        return {"method": points.method, "generation": points.generation, "images": len(points.ids),
                "ids": points.ids.tolist(), "x": np.round(points.xy[:, 0], 5).tolist(),
                "y": np.round(points.xy[:, 1], 5).tolist(), "group": points.group.tolist(), "groups": points.groups}

    def close(self) -> None:
        """Stop following, the encoder thread, and release the catalogue."""
        if self._following is not None:
            thread, stop = self._following
            stop.set()
            thread.join(timeout=10)
        with self._switching:
            served = self._served
            served.batcher.close()
            if self.writer is not None:
                self.writer.close()
            served.collection.close()

    def describe(self) -> dict[str, Any]:
        """The collection, the generation served and the model, for /api/info."""
        served = self._served
        return {"images": len(served.collection), "generation": served.generation,
                **served.collection.encoder.describe()}
