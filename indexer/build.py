"""The batch pipeline: scan -> decode (worker processes) -> encode (fixed-size batches) -> commit -> vectors."""
from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import multiprocessing
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from encoder import store
from encoder.preprocess import IMAGE_EXTENSIONS, ImageError, load_image, peek_size
from encoder.runtime import configure_threads
from encoder.train import TrainConfig, plateau_warning
from indexer.catalog import Catalog, NewImage
from indexer.collection import MODEL_KEY, check_model_matches, load_vectors
from indexer.copies import sketches
from indexer.lock import CollectionBusy, exclusive
from indexer.scan import FileEntry, scan

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.tsv"
LOCK_WAIT = 10.0  # seconds a build waits for a server's write to finish
GREY_SAMPLE = 200  # images looked at to decide whether a collection is grey
SIZE_SAMPLE = 200  # image headers read to choose the model's input size
# Reconstruction errors measured per collection. The decoder pass that measures one costs ~5x the encoder pass,
# and the service needs only their distribution (to say a query is unlike the collection): a uniform sample of
# this size places the 99th percentile within about 0.3 percentile points (binomial: sqrt(n*0.01*0.99)/n).
ERROR_SAMPLE = 1_000


class BuildError(RuntimeError):
    """A fatal problem, with a one-line reason for the user."""


@dataclass
class BuildOptions:
    """Knobs of `indexer build` and `indexer train`; None means 'the default, or what the model already has'."""

    image_size: int | None = None
    code_size: int | None = None
    steps: int | None = None
    epochs: int | None = None
    time_budget: float | None = None
    variant: str | None = None
    training: dict = field(default_factory=dict)  # other TrainConfig fields (corruption levels, penalty weights)
    retrain: bool = False
    max_train_images: int = 10_000
    workers: int = 0  # 0: one per core
    commit_every: int = 1024  # images per transaction: the most a crash can cost
    error_sample: int = ERROR_SAMPLE  # images whose reconstruction error is measured (0: none)
    progress: bool = True


@dataclass
class BuildReport:
    """What a run did."""

    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    trained: bool = False
    images: int = 0
    seconds: float = 0.0
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: scan, train, load_model, index, vectors
    vectors: dict = field(default_factory=dict)  # the search index chosen: kind, lists, probes, measured recall@10

    def summary(self) -> dict:
        """The counts as a JSON-able dict."""
        return {"indexed": self.indexed, "unchanged": self.unchanged, "removed": self.removed,
                "skipped": len(self.skipped), "images": self.images, "trained": self.trained,
                "seconds": round(self.seconds, 2), "model": self.model,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}, "vectors": self.vectors}


@dataclass(frozen=True)
class Decoded:
    """A worker's answer for one file: pixels and facts, or the reason it failed."""

    entry: FileEntry
    pixels: np.ndarray | None
    reason: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0


def decode_file(root: str, size: int, channels: int, entry: FileEntry) -> Decoded:
    """Read, hash and preprocess one file (runs in a worker process)."""
    try:
        with open(os.path.join(root, entry.relpath), "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return Decoded(entry, None, f"cannot read: {exc.strerror}")
    try:
        image = load_image(data, size, channels)
    except ImageError as exc:
        return Decoded(entry, None, str(exc))
    return Decoded(entry, image.pixels, "", hashlib.sha256(data).hexdigest(), image.width, image.height)


@contextmanager
def _exclusive(index_dir: Path) -> Iterator[None]:
    """One writer per collection: a second build fails at once instead of interleaving."""
    held = ExitStack()
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        # A server's HTTP write holds the lock for milliseconds: wait that out; another build holds it for minutes.
        held.enter_context(exclusive(index_dir, wait=LOCK_WAIT))
    except CollectionBusy:
        raise BuildError(f"another build (or a server saving its writes) is using {index_dir}; try again when it "
                         "ends") from None
    except OSError as exc:
        raise BuildError(f"cannot write to {index_dir}: {exc.strerror}") from None
    with held:
        yield


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


IN_FLIGHT = 4096  # decoded images allowed to wait for the encoder: bounds memory when decoding outruns encoding


@contextmanager
def decoding(root: Path, entries: list[FileEntry], size: int, channels: int, workers: int, progress: bool,
             desc: str = "decoding") -> Iterator[Iterator[Decoded]]:
    """Start decoding `entries` at once in worker processes; the body iterates over results as they finish.

    The workers start on entering, so whatever the caller does next (loading TensorFlow and the model: 2-3 s)
    overlaps with decoding. At most IN_FLIGHT results wait unconsumed; small batches are decoded in-process.
    """
    work = functools.partial(decode_file, str(root), size, channels)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(entries) < 64:
        yield _progress(map(work, entries), len(entries), desc, progress)
        return
    chunk = 16  # files per message to a worker
    # The pool's feeding thread holds back a whole chunk before sending it: the window must exceed the chunks in
    # flight, or the feeder would wait for results that cannot come.
    window = threading.Semaphore(max(IN_FLIGHT, 2 * chunk * workers))
    stopping = threading.Event()

    def fed() -> Iterator[FileEntry]:
        # Runs in the pool's task-feeding thread: waiting here is the back-pressure.
        for entry in entries:
            while not window.acquire(timeout=0.5):
                if stopping.is_set():
                    return
            yield entry

    def results(pending: Iterator[Decoded]) -> Iterator[Decoded]:
        for result in pending:
            window.release()
            yield result

    # spawn, not fork: the parent may already hold TensorFlow's threads, which do not survive a fork.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        try:
            pending = pool.imap_unordered(work, fed(), chunksize=chunk)
            yield _progress(results(pending), len(entries), desc, progress)
        finally:
            stopping.set()  # lets the feeding thread end if the body stopped early


def decode_all(root: Path, entries: list[FileEntry], size: int, channels: int, workers: int,
               progress: bool, desc: str = "decoding") -> list[Decoded]:
    """Decode `entries` (in worker processes for big batches); results in completion order."""
    with decoding(root, entries, size, channels, workers, progress, desc) as results:
        return list(results)


def _all_grey(pixels: np.ndarray) -> bool:
    px = pixels[:GREY_SAMPLE].astype(np.int16)  # (n, S, S, 3)
    return bool(np.abs(px[..., 0] - px[..., 1]).max() <= 8 and np.abs(px[..., 1] - px[..., 2]).max() <= 8)


def natural_image_size(root: Path, entries: list[FileEntry], largest: int) -> int:
    """The model's input side for a collection: `largest`, unless its images are smaller (28x28 digits train at 28).

    Upsampling small images only costs training time; a side that is a multiple of 4 keeps the encoder's
    stride-2 steps exact.
    """
    sides = []
    for entry in entries[:: max(1, len(entries) // SIZE_SAMPLE)][:SIZE_SAMPLE]:
        try:
            sides.append(min(peek_size(root / entry.relpath)))
        except ImageError:
            continue
    if not sides:
        return largest
    return int(min(largest, max(16, int(np.median(sides)) // 4 * 4)))


def train_on(root: Path, entries: list[FileEntry], index_dir: Path, options: BuildOptions) -> tuple[dict, list[Decoded]]:
    """Decode a sample of `entries`, pick colour or grey, train and save the encoder.

    Returns the model's info and the decoded sample, which the indexing pass reuses instead of decoding twice.
    """
    from encoder.train import train

    if not entries:
        raise BuildError(f"no images found in {root}")
    defaults = TrainConfig()
    size = options.image_size or natural_image_size(root, entries, defaults.image_size)
    rng = np.random.default_rng(0)
    sample = entries if len(entries) <= options.max_train_images else [
        entries[i] for i in sorted(rng.choice(len(entries), options.max_train_images, replace=False))]

    def read(channels: int, desc: str) -> list[Decoded]:
        return [d for d in decode_all(root, sample, size, channels, options.workers, options.progress, desc)
                if d.pixels is not None]

    decoded = read(3, "reading for training")
    if not decoded:
        raise BuildError(f"none of the {len(sample)} images sampled from {root} could be read")
    channels = 3
    if _all_grey(np.stack([d.pixels for d in decoded[:GREY_SAMPLE]])):
        # Re-read through the same Pillow path the queries will take, so training sees exactly their pixels.
        log.info("every sampled image is grey: training a single-channel model")
        channels = 1
        decoded = read(1, "reading for training (grey)")
    budget = {k: v for k in ("steps", "epochs", "time_budget") if (v := getattr(options, k)) is not None}
    config = TrainConfig(image_size=size, channels=channels, code_size=options.code_size or defaults.code_size,
                         variant=options.variant or defaults.variant, **budget, **options.training)
    info = train(np.stack([d.pixels for d in decoded]), config, index_dir)
    warning = plateau_warning(info)
    if warning:
        log.warning(warning)
    return info, decoded


def _check_options_fit(info: dict, options: BuildOptions) -> None:
    for name in ("image_size", "code_size", "variant"):
        wanted = getattr(options, name)
        if wanted is not None and wanted != info[name]:
            raise BuildError(f"the collection's encoder has {name.replace('_', '-')} {info[name]}, not {wanted}; "
                             "add --retrain to train a new encoder and re-encode everything")


def _write_skipped(index_dir: Path, skipped: list[tuple[str, str]]) -> None:
    lines = ["path\treason"] + [f"{p}\t{r.replace(chr(9), ' ').replace(chr(10), ' ')}" for p, r in skipped]
    store.atomic_write_bytes(index_dir / SKIPPED_FILE, ("\n".join(lines) + "\n").encode())


def build(images_dir: str | os.PathLike, index_dir: str | os.PathLike, options: BuildOptions | None = None,
          train_only: bool = False) -> BuildReport:
    """Index `images_dir` into `index_dir`: train an encoder if needed, then encode new and changed files."""
    from encoder.embed import Encoder

    options = options or BuildOptions()
    started = time.perf_counter()
    root = Path(images_dir).resolve()
    index_dir = Path(index_dir).resolve()
    if not root.is_dir():
        raise BuildError(f"{images_dir} is not a folder")
    report = BuildReport()
    with _exclusive(index_dir), Catalog(index_dir) as catalog:
        found = scan(root, exclude=index_dir)
        report.timings["scan"] = time.perf_counter() - started
        if not found.images and not catalog.count():
            raise BuildError(f"no images found in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        predecoded: dict[str, Decoded] = {}
        if options.retrain or train_only or not store.has_model(index_dir):
            stage = time.perf_counter()
            info, sample = train_on(root, found.images, index_dir, options)
            report.timings["train"] = time.perf_counter() - stage
            predecoded = {d.entry.relpath: d for d in sample}
            report.trained = True
        else:
            info = store.read_info(index_dir)
            _check_options_fit(info, options)
        if report.trained and catalog.get_meta(MODEL_KEY) != info["sha256"]:
            with catalog.conn:  # new model: every old code is meaningless, start the catalogue afresh
                catalog.clear_codes()
                catalog.set_meta(MODEL_KEY, info["sha256"])
                catalog.bump_generation()
        try:
            check_model_matches(catalog, info["sha256"], index_dir)
        except store.ModelError as exc:
            raise BuildError(str(exc)) from None
        report.model = f"sha256:{info['sha256']}"
        with catalog.conn:
            catalog.set_meta(MODEL_KEY, info["sha256"])
            catalog.set_meta("root", str(root))
        if train_only:
            report.images = catalog.count()
            report.seconds = time.perf_counter() - started
            return report

        known = catalog.fingerprints()
        known_bad = catalog.skipped_fingerprints()
        present = {e.relpath for e in found.images}
        todo: list[FileEntry] = []
        for entry in found.images:
            if known.get(entry.relpath) == (entry.size, entry.mtime_ns):
                report.unchanged += 1
            elif known_bad.get(entry.relpath, (None, None, ""))[:2] == (entry.size, entry.mtime_ns):
                report.skipped.append((entry.relpath, known_bad[entry.relpath][2]))  # failed before, unchanged since
            else:
                todo.append(entry)
        gone = [p for p in known if p not in present] + [p for p in known_bad if p not in present]
        if gone:
            with catalog.conn:
                report.removed = catalog.remove(gone)
                catalog.bump_generation()

        if todo:
            rest = [e for e in todo if e.relpath not in predecoded]
            stage = time.perf_counter()
            # The decode workers start first and run while TensorFlow and the model load.
            with decoding(root, rest, int(info["image_size"]), int(info["channels"]), options.workers,
                          options.progress, "indexing") as fresh:
                configure_threads()  # one TensorFlow thread per core, one inter-op thread (no-op if already set)
                encoder = Encoder.load(index_dir)
                report.timings["load_model"] = time.perf_counter() - stage
                _encode_into(catalog, encoder, [predecoded[e.relpath] for e in todo if e.relpath in predecoded],
                             fresh, len(todo), options, report)
            report.timings["index"] = time.perf_counter() - stage  # load + decode + encode + commit, overlapped
        report.skipped.extend(found.passed_over)
        report.skipped.sort()
        stage = time.perf_counter()
        vectors = load_vectors(catalog, index_dir, int(info["code_size"]), save=True)  # rebuilt only when stale
        report.vectors = {k: vectors.meta[k] for k in ("kind", "nlist", "nprobe", "recall_at_10") if k in vectors.meta}
        report.timings["vectors"] = time.perf_counter() - stage
        _write_skipped(index_dir, report.skipped)
        report.images = catalog.count()
    report.seconds = time.perf_counter() - started
    return report


def _encode_into(catalog: Catalog, encoder, reused: list[Decoded], fresh: Iterable[Decoded], total: int,
                 options: BuildOptions, report: BuildReport) -> None:
    """Encode and commit `total` decoded images (`reused` from training, then `fresh`) in transactions of
    `options.commit_every`.

    Images are encoded one encoder batch at a time as the decode workers deliver them, so that encoding overlaps
    decoding instead of waiting for a whole transaction's worth; the transaction size only bounds what a crash costs.
    """
    decoded: list[Decoded] = []  # decoded, not yet encoded
    rows: list[NewImage] = []  # encoded, not yet committed
    failed: list[Decoded] = []
    share = min(1.0, options.error_sample / max(1, total + catalog.count()))

    def encode() -> None:
        if not decoded:
            return
        pixels = np.stack([d.pixels for d in decoded])  # (n, S, S, C)
        # The file's hash picks the sample: uniform over the collection, and the same on every run.
        measured = np.array([int(d.sha256[:8], 16) < share * 2**32 for d in decoded])  # (n,)
        codes = np.empty((len(decoded), encoder.code_size), np.float32)
        errors: list[float | None] = [None] * len(decoded)
        if measured.any():
            codes[measured], sample_errors = encoder.encode_with_error(pixels[measured])
            for i, e in zip(np.flatnonzero(measured), sample_errors):
                errors[i] = float(e)
        if not measured.all():
            codes[~measured] = encoder.encode(pixels[~measured])
        marks = sketches(pixels)  # (n, SKETCH_BYTES): for the copy check at query time
        rows.extend(NewImage(d.entry.relpath, d.entry.size, d.entry.mtime_ns, d.sha256, d.width, d.height,
                             codes[i], errors[i], marks[i]) for i, d in enumerate(decoded))
        decoded.clear()

    def commit() -> None:
        encode()
        with catalog.conn:  # one transaction: a crash keeps whole batches only
            catalog.upsert(rows)
            catalog.record_skipped([(d.entry.relpath, d.entry.size, d.entry.mtime_ns, d.reason) for d in failed])
            catalog.bump_generation()
        report.indexed += len(rows)
        report.skipped.extend((d.entry.relpath, d.reason) for d in failed)
        rows.clear()
        failed.clear()

    for result in itertools.chain(reused, fresh):
        (decoded if result.pixels is not None else failed).append(result)
        if len(decoded) >= encoder.batch_size:
            encode()
        if len(rows) + len(decoded) >= options.commit_every:
            commit()
    commit()
