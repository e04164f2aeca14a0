"""Engine: a collection loaded once, answering searches by image, by id, and serving images by id."""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoder.preprocess import ImageError
from indexer.collection import Collection, Hit
from indexer.copies import sketches
from indexer.duplicates import DEFAULT_CHECK
from indexer.explore import duplicates_report, outliers_report
from indexer.neighbours import percentile
from indexer.writes import Added, CollectionWriter
from search_api.batcher import MicroBatcher

log = logging.getLogger(__name__)

# Models trained before encoder.novelty existed: a query reconstructed worse than this share of the collection
# is "unlike" it (the only rule they can have; it flags digits, not simple images, and ~3% of unseen photos).
UNUSUAL_PERCENTILE = 99.0


class NotFound(LookupError):
    """An id that is not in the collection, or whose file is gone."""


@dataclass(frozen=True)
class SearchResult:
    """Hits plus what a caller needs to present them."""

    hits: list[Hit]
    took_ms: float
    query: dict[str, Any] | None = None


class Engine:
    """Thread-safe search over one collection; everything heavy is loaded in the constructor, once."""

    def __init__(self, index_dir: str | os.PathLike, thumbnail_size: int = 256, writable: bool = False):
        self.collection = Collection.open(index_dir, save_stale=writable)  # a writing server keeps its writes' vectors
        self.thumbnail_size = thumbnail_size
        self.root = self.collection.images_root
        self.writer = self.collection.writer() if writable else None
        # Measured at build time for this generation (see indexer.collection.calibration): start-up reads no codes.
        calibration = self.collection.calibration
        self._scale = float(calibration.get("score_scale", 1.0)) or 1.0
        self._error_quantiles = np.asarray(calibration.get("error_quantiles", []), np.float64)  # (1001,) or (0,)
        self._nn_quantiles = np.asarray(calibration.get("nn_quantiles", []), np.float64)  # (1001,) or (0,)
        self._thumbnail = functools.lru_cache(maxsize=4096)(self._make_thumbnail)
        self._warm_up()
        self._batcher = MicroBatcher(self.collection.encoder.encode_for_query)
        log.info("engine ready: %d images, model %s, score scale %.4f", self.images,
                 self.collection.encoder.model_id[:19], self._scale)

    def _warm_up(self) -> None:
        # The first call of a tf.function traces the graph (~0.2 s); pay that at start-up, not on a user's query.
        encoder = self.collection.encoder
        encoder.encode_for_query(np.zeros((1, encoder.image_size, encoder.image_size, encoder.channels), np.uint8))

    @property
    def images(self) -> int:
        """Images in the collection now: the searchable ones, so it moves with every write as searches do."""
        return len(self.collection)

    @property
    def model_id(self) -> str:
        """'sha256:<hex>' of the encoder."""
        return self.collection.encoder.model_id

    def score(self, distance: float) -> float:
        """Similarity in (0, 1]: 1 for identical codes, 0.5 at the typical 10th-neighbour distance."""
        return math.exp(-math.log(2) * distance / self._scale)

    def percentile(self, distance: float) -> float:
        """0-100: the share of the collection's nearest-neighbour distances larger than `distance`."""
        return round(float(percentile(distance, self._nn_quantiles)), 2)

    def _unusualness(self, pixels: np.ndarray, error: float, latent: np.ndarray) -> dict[str, Any]:
        """What the model makes of a query: its error, each out-of-domain signal's percentile, which fired."""
        quantiles = self._error_quantiles
        percentile = 0.0
        if len(quantiles):  # the share of the collection reconstructed better, interpolated between 0.1% steps
            percentile = float(np.interp(error, quantiles, np.linspace(0, 100, len(quantiles))))
        facts = {"reconstruction_error": round(error, 6), "error_percentile": round(float(percentile), 2)}
        judged = self.collection.encoder.judge(pixels[None], np.array([error]), latent[None])
        if judged is None:
            reasons = ["error"] if percentile > UNUSUAL_PERCENTILE else []
            return facts | {"unusual": bool(reasons), "reasons": reasons, "signals": {}}
        return facts | {"unusual": bool(judged[0]["fired"]), "reasons": judged[0]["fired"],
                        "signals": judged[0]["signals"]}

    def search_image(self, data: bytes, k: int, offset: int = 0) -> SearchResult:
        """Neighbours of an uploaded image; raises encoder.preprocess.ImageError for a bad one."""
        started = time.perf_counter()
        from encoder.preprocess import load_image

        encoder = self.collection.encoder
        # Decoding runs in the request's thread (in parallel); the encoder pass is batched with concurrent queries.
        pixels = load_image(data, encoder.image_size, encoder.channels).pixels  # (S, S, C)
        code, error, latent = self._batcher.encode(pixels)  # (d,), (), (d,)
        hits = self.collection.neighbours(code, k, offset, sketch=sketches(pixels[None])[0])
        query = self._unusualness(pixels, float(error), latent)
        return SearchResult(hits, (time.perf_counter() - started) * 1000, query)

    def search_id(self, image_id: int, k: int, offset: int = 0) -> SearchResult:
        """Neighbours of an indexed image, the image itself left out."""
        started = time.perf_counter()
        code = self.collection.code_of(image_id)
        if code is None:
            raise NotFound(f"no image with id {image_id}")
        hits = self.collection.neighbours(code, k, offset, exclude=image_id, sketch=self.collection.sketch_of(image_id))
        return SearchResult(hits, (time.perf_counter() - started) * 1000)

    def image_path(self, image_id: int) -> Path:
        """The file of an indexed image, guaranteed to lie inside the indexed folder."""
        relpath = self.collection.relpath_of(image_id)
        if relpath is None or self.root is None:
            raise NotFound(f"no image with id {image_id}")
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
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
        """Stop the encoder thread and release the catalogue."""
        self._batcher.close()
        if self.writer is not None:
            self.writer.close()
        self.collection.close()

    def describe(self) -> dict[str, Any]:
        """The collection and model, for /api/info."""
        return {"images": self.images, **self.collection.encoder.describe()}
