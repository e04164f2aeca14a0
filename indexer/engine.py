"""Decode + encode: the part of a build that an engine runs, between the plan and the one writer.

An engine takes an `EncodeJob` (which files, which model, which images to measure) and yields `EncodedBatch`es:
catalogue rows ready to write, and the files that failed with their reasons. It writes nothing. The build's single
writer (`indexer.commit`) commits what it yields, so the transactions, the skip report and the crash safety are
the same whichever engine ran. `LocalEngine` decodes in worker processes on this machine and encodes in this
process; an engine for a cluster (Ray Data, an actor pool per encoder) would load the model from `job.index_dir`
in its actors and call `encode_batch` there.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from encoder.runtime import configure_threads
from indexer.catalog import NewImage
from indexer.copies import sketches
from indexer.decode import DecodedFile, decoding, stack_pixels
from indexer.scan import FileEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeJob:
    """What to decode and encode, and with which model."""

    root: Path  # the indexed folder
    index_dir: Path  # holds the encoder: an engine loads it wherever it encodes
    entries: list[FileEntry]  # the plan's to_encode
    image_size: int
    channels: int
    error_share: float  # the fraction of images whose reconstruction error is measured, chosen by file hash
    commit_every: int  # the writer's transaction size: cutting batches there lets a transaction commit at once
    decoded: Mapping[str, DecodedFile] = field(default_factory=dict)  # relpath -> already decoded here (training)


@dataclass(frozen=True)
class EncodedBatch:
    """Encoded images ready to be catalogued, and the files that could not be used."""

    rows: list[NewImage]
    failed: list[tuple[FileEntry, str]]  # (file, reason)


class EngineFailed(RuntimeError):
    """An engine could not run or finish its job; what it yielded before was committed and is kept."""


class Engine(Protocol):
    """Runs decode + encode for a build; the build's writer commits what it yields."""

    def run(self, job: EncodeJob) -> AbstractContextManager[Iterator[EncodedBatch]]:
        """Start `job` on entering; the body iterates over its batches; leaving stops whatever is still running."""


def encode_batch(encoder, decoded: list[DecodedFile], error_share: float) -> list[NewImage]:
    """Encode decoded images into catalogue rows: code, sketch, and the reconstruction error for a sample."""
    if not decoded:
        return []
    pixels = stack_pixels(decoded)  # (n, S, S, C)
    # The file's hash picks the sample: uniform over the collection, and the same on every run and every engine.
    measured = np.array([int(d.sha256[:8], 16) < error_share * 2**32 for d in decoded])  # (n,)
    codes = np.empty((len(decoded), encoder.code_size), np.float32)  # (n, code_size)
    errors: list[float | None] = [None] * len(decoded)
    if measured.any():
        codes[measured], sample_errors = encoder.encode_with_error(pixels[measured])
        for i, e in zip(np.flatnonzero(measured), sample_errors):
            errors[i] = float(e)
    if not measured.all():
        codes[~measured] = encoder.encode(pixels[~measured])
    marks = sketches(pixels)  # (n, SKETCH_BYTES): for the copy check at query time
    return [NewImage(d.entry.relpath, d.entry.size, d.entry.mtime_ns, d.sha256, d.width, d.height, codes[i],
                     errors[i], marks[i]) for i, d in enumerate(decoded)]


class LocalEngine:
    """Decode in worker processes on this machine (indexer.decode), encode in this process."""

    def __init__(self, workers: int = 0, progress: bool = True):
        self.workers = workers  # 0: one per core
        self.progress = progress

    @contextmanager
    def run(self, job: EncodeJob) -> Iterator[Iterator[EncodedBatch]]:
        """Start the decode workers, then load the model while they run; the body iterates over the batches."""
        from encoder.embed import Encoder

        rest = [e for e in job.entries if e.relpath not in job.decoded]
        # The decode workers start first and run while TensorFlow and the model load.
        with decoding(job.root, rest, job.image_size, job.channels, self.workers, self.progress,
                      "indexing") as fresh:
            configure_threads()  # one TensorFlow thread per core, one inter-op thread (no-op if already set)
            encoder = Encoder.load(job.index_dir)
            yield _batches(encoder, in_plan_order(job, fresh), job)


def in_plan_order(job: EncodeJob, fresh: Iterable[DecodedFile]) -> Iterator[DecodedFile]:
    """Every entry of `job` in plan order: the training sample's decodes where there are some, `fresh` (the decodes
    of the other entries, in order) for the rest. The order is what makes ids the same on every run and engine."""
    remaining = iter(fresh)
    for entry in job.entries:
        yield job.decoded[entry.relpath] if entry.relpath in job.decoded else next(remaining)


def _batches(encoder, results: Iterable[DecodedFile], job: EncodeJob) -> Iterator[EncodedBatch]:
    # One encoder batch at a time as the workers deliver, so that encoding overlaps decoding; a batch also ends
    # where a transaction does, so the writer never waits for images beyond the ones it commits.
    decoded: list[DecodedFile] = []
    failed: list[tuple[FileEntry, str]] = []
    since_commit = 0  # images yielded since the last multiple of job.commit_every
    for result in results:
        if result.pixels is None:
            failed.append((result.entry, result.reason))
            continue
        decoded.append(result)
        boundary = since_commit + len(decoded) >= job.commit_every
        if boundary or len(decoded) >= encoder.batch_size:
            yield EncodedBatch(encode_batch(encoder, decoded, job.error_share), failed)
            since_commit = 0 if boundary else since_commit + len(decoded)
            decoded, failed = [], []
    if decoded or failed:
        yield EncodedBatch(encode_batch(encoder, decoded, job.error_share), failed)
