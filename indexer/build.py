"""A build, start to end: scan -> plan -> decode + encode (an engine) -> commit (the one writer) -> vectors.

Each stage is its own module: `scan`, `plan` (pure: what to encode, keep, drop, retry), `decode` (worker
processes with back-pressure), `engine` (decode + encode: where another executor plugs in), `commit`
(transactions and the skip report), `training_sample` (what a new encoder trains on). This module only orders
them, under the collection's lock.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from encoder import store
from encoder.options import TrainConfig
from encoder.preprocess import IMAGE_EXTENSIONS
from encoder.train import plateau_warning
from indexer import settings
from indexer.catalog import Catalog
from indexer.collection import MODEL_KEY, check_model_matches, load_vectors
from indexer.commit import SKIPPED_FILE, commit_batches, write_skip_report
from indexer.decode import DecodedFile, stack_pixels
from indexer.engine import EncodeJob, Engine, EngineFailed, LocalEngine
from indexer.lock import CollectionBusy, exclusive
from indexer.plan import plan
from indexer.scan import FileEntry, ScanResult, scan
from indexer.training_sample import natural_image_size, read_training_sample, training_sample

log = logging.getLogger(__name__)

__all__ = ["SKIPPED_FILE", "BuildError", "BuildOptions", "BuildReport", "build"]

LOCK_WAIT = 10.0  # seconds a build waits for a server's write to finish
# Reconstruction errors are measured for every image: outliers are ranked over the whole collection. The decoder
# pass that measures one costs 3-4x the encoder pass; `error_sample` measures a uniform sample instead
# (1,000 place the 99th percentile of the errors within about 0.3 points: sqrt(n*0.01*0.99)/n).
ERROR_SAMPLE: int | None = settings.DEFAULTS["ERROR_SAMPLE"]  # --error-sample, LOOKALIKE_ERROR_SAMPLE


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
    max_train_images: int = settings.DEFAULTS["MAX_TRAIN_IMAGES"]
    workers: int = settings.DEFAULTS["WORKERS"]  # 0: one per core
    commit_every: int = settings.DEFAULTS["COMMIT_BATCH"]  # images per transaction: the most a crash can cost
    engine: str = settings.DEFAULTS["ENGINE"]  # where decode + encode run: "local" or "ray"
    ray_address: str = settings.DEFAULTS["RAY_ADDRESS"]  # "": a local Ray instance for the build
    ray_encoders: int = settings.DEFAULTS["RAY_ENCODERS"]  # 0: half the cluster's CPUs
    error_sample: int | None = ERROR_SAMPLE  # images whose reconstruction error is measured (None: all, 0: none)
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
    # seconds per stage: scan, train, load_model, index, vectors
    timings: dict[str, float] = field(default_factory=dict)
    vectors: dict = field(default_factory=dict)  # the search index chosen: kind, lists, probes, measured recall@10

    def summary(self) -> dict:
        """The counts as a JSON-able dict."""
        return {"indexed": self.indexed, "unchanged": self.unchanged, "removed": self.removed,
                "skipped": len(self.skipped), "images": self.images, "trained": self.trained,
                "seconds": round(self.seconds, 2), "model": self.model,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}, "vectors": self.vectors}


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


def _check_options_fit(info: dict, options: BuildOptions) -> None:
    for name in ("image_size", "code_size", "variant"):
        wanted = getattr(options, name)
        if wanted is not None and wanted != info[name]:
            raise BuildError(f"the collection's encoder has {name.replace('_', '-')} {info[name]}, not {wanted}; "
                             "add --retrain to train a new encoder and re-encode everything")


def _train(root: Path, entries: list[FileEntry], index_dir: Path,
           options: BuildOptions) -> tuple[dict, dict[str, DecodedFile]]:
    """Train and save an encoder on a sample of `entries`; returns its info and the decoded sample by path, which
    the indexing pass reuses instead of decoding twice."""
    from encoder.train import train

    if not entries:
        raise BuildError(f"no images found in {root}")
    defaults = TrainConfig()
    size = options.image_size or natural_image_size(root, entries, defaults.image_size)
    sample = training_sample(entries, options.max_train_images)
    channels, decoded = read_training_sample(root, sample, size, options.workers, options.progress)
    if not decoded:
        raise BuildError(f"none of the {len(sample)} images sampled from {root} could be read")
    budget = {k: v for k in ("steps", "epochs", "time_budget") if (v := getattr(options, k)) is not None}
    config = TrainConfig(image_size=size, channels=channels, code_size=options.code_size or defaults.code_size,
                         variant=options.variant or defaults.variant, **budget, **options.training)
    info = train(stack_pixels(decoded), config, index_dir, progress=options.progress)  # (n, S, S, C) in
    warning = plateau_warning(info)
    if warning:
        log.warning(warning)
    return info, {d.entry.relpath: d for d in decoded}


def _encoder_for(root: Path, index_dir: Path, found: ScanResult, catalog: Catalog, options: BuildOptions,
                 train_only: bool, report: BuildReport) -> tuple[dict, dict[str, DecodedFile]]:
    """The collection's encoder, trained now if needed, and stamped on the catalogue; returns its info and what
    training decoded."""
    predecoded: dict[str, DecodedFile] = {}
    if options.retrain or train_only or not store.has_model(index_dir):
        stage = time.perf_counter()
        info, predecoded = _train(root, found.images, index_dir, options)
        report.timings["train"] = time.perf_counter() - stage
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
    return info, predecoded


def _error_share(sample: int | None, images: int) -> float:
    """The share of images whose reconstruction error is measured: all, or enough for a sample of `sample`."""
    return 1.0 if sample is None else min(1.0, sample / max(images, 1))


def _index(root: Path, index_dir: Path, found: ScanResult, catalog: Catalog, info: dict,
           predecoded: dict[str, DecodedFile], options: BuildOptions, report: BuildReport) -> None:
    """Plan, drop what left the folder, then decode, encode and commit what is new or changed."""
    todo = plan(found.images, catalog.fingerprints(), catalog.skipped_fingerprints())
    log.debug("plan: %d to encode (%d failed before), %d unchanged, %d still skipped, %d to drop",
              len(todo.to_encode), len(todo.to_retry), len(todo.unchanged), len(todo.still_skipped),
              len(todo.to_drop))
    report.unchanged = len(todo.unchanged)
    report.skipped.extend(todo.still_skipped)
    if todo.to_drop:
        with catalog.conn:
            report.removed = catalog.remove(todo.to_drop)
            catalog.bump_generation()
    if not todo.to_encode:
        return
    job = EncodeJob(root, index_dir, todo.to_encode, int(info["image_size"]), int(info["channels"]),
                    error_share=_error_share(options.error_sample, len(todo.to_encode) + catalog.count()),
                    commit_every=options.commit_every, decoded=predecoded)
    stage = time.perf_counter()
    # The one place that picks the engine: it runs decode + encode; the commit stays here, in this process.
    try:
        with _engine(options).run(job) as batches:
            report.timings["load_model"] = time.perf_counter() - stage
            committed = commit_batches(catalog, batches, options.commit_every)
    except EngineFailed as why:  # the batches committed before stay; the same command resumes after them
        raise BuildError(f"{why}; what was indexed before is kept: run the same command again to continue") from None
    report.timings["index"] = time.perf_counter() - stage  # load + decode + encode + commit, overlapped
    report.indexed = committed.indexed
    report.skipped.extend(committed.skipped)


def _engine(options: BuildOptions) -> Engine:
    """The engine `options` ask for; Ray only when its optional extra is installed."""
    if options.engine == "ray":
        from indexer.ray_engine import RayEngine, ray_available

        if not ray_available():
            raise BuildError("--engine ray needs the optional Ray extra: pip install 'lookalike[ray]' "
                             "(or -r requirements-ray.txt)")
        return RayEngine(options.ray_address, options.ray_encoders, options.progress)
    if options.engine != "local":
        raise BuildError(f"unknown engine {options.engine!r}: choose one of {', '.join(settings.ENGINES)}")
    return LocalEngine(options.workers, options.progress)


def _publish(index_dir: Path, found: ScanResult, catalog: Catalog, info: dict, report: BuildReport) -> None:
    """Save the vectors (rebuilt only when stale) and this run's skip report."""
    report.skipped.extend(found.passed_over)
    report.skipped.sort()
    stage = time.perf_counter()
    vectors = load_vectors(catalog, index_dir, int(info["code_size"]), save=True)
    report.vectors = {k: vectors.meta[k] for k in ("kind", "nlist", "nprobe", "recall_at_10") if k in vectors.meta}
    report.timings["vectors"] = time.perf_counter() - stage
    write_skip_report(index_dir, report.skipped)


def build(images_dir: str | os.PathLike, index_dir: str | os.PathLike, options: BuildOptions | None = None,
          train_only: bool = False) -> BuildReport:
    """Index `images_dir` into `index_dir`: train an encoder if needed, then encode new and changed files."""
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
        info, predecoded = _encoder_for(root, index_dir, found, catalog, options, train_only, report)
        if not train_only:
            _index(root, index_dir, found, catalog, info, predecoded, options, report)
            _publish(index_dir, found, catalog, info, report)
        report.images = catalog.count()
    report.seconds = time.perf_counter() - started
    return report
