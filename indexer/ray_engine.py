"""Decode + encode on a Ray cluster: Ray Data streams the plan's files through decode tasks and an encoder actor pool.

The pipeline, in Ray Data terms: a dataset of the plan's entries (path, size, mtime) in blocks of `FILES_PER_TASK`
-> `map_batches(decode_files)`, CPU tasks that read, hash and preprocess each file with the function the local
engine's workers run (`indexer.decode.decode_file`) -> `map_batches(Encoding)` on a fixed pool of actors, each
loading the encoder once from the collection folder (hash-checked, as everywhere) and calling
`indexer.engine.encode_batch` -> `iter_batches` back to the driver, in plan order, where the build's one writer
commits them as it does for the local engine. So the rows, the skip reasons, the transactions and the crash
safety are the local engine's; only where the work runs differs.

The files are read by the decode tasks rather than by a Ray Data file reader: a file that vanished or cannot be
read then becomes a skip reason, as in a local build, instead of failing the whole dataset. Every node must see the
images folder and the collection folder at the same paths (shared storage) and have lookalike installed.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from encoder.runtime import chosen_runtime
from indexer.catalog import NewImage
from indexer.copies import SKETCH_BYTES
from indexer.decode import DecodedFile, decode_file
from indexer.engine import EncodedBatch, EncodeJob, EngineFailed, encode_batch
from indexer.scan import FileEntry

log = logging.getLogger(__name__)

FILES_PER_TASK = 64  # files per decode task: large enough to amortise a task's overhead, small enough to spread
ENCODE_BATCH = 256  # images per encoder call in an actor (encoder.embed's batch)
# What an encoder actor reserves besides its CPU: TensorFlow and a model. Declaring it also keeps Ray Data from
# fusing the decode tasks into the actors (it fuses only stages with the same resources), so decoding spreads over
# every free CPU instead of running inside the few encoder actors.
ENCODER_MEMORY = 1024 * 2**20
PACKAGES_ROOT = str(Path(__file__).resolve().parent.parent)  # holds encoder/, indexer/: put on the workers' path


def ray_available() -> bool:
    """Whether the optional Ray extra (ray[data]) is installed."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def decode_files(batch: dict[str, np.ndarray], root: str, size: int, channels: int) -> dict[str, np.ndarray]:
    """Ray Data task: read, hash and preprocess a block of files; failed ones keep their reason and zero pixels."""
    n = len(batch["relpath"])
    pixels = np.zeros((n, size, size, channels), np.uint8)  # (n, S, S, C)
    ok = np.zeros(n, bool)
    sha256, reason = np.empty(n, object), np.empty(n, object)
    width, height = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, entry in enumerate(_entries(batch)):
        decoded = decode_file(root, size, channels, entry)
        sha256[i], reason[i] = decoded.sha256, decoded.reason
        if decoded.pixels is not None:
            pixels[i], ok[i], width[i], height[i] = decoded.pixels, True, decoded.width, decoded.height
    return {"relpath": batch["relpath"], "size": batch["size"], "mtime_ns": batch["mtime_ns"], "ok": ok,
            "reason": reason, "sha256": sha256, "width": width, "height": height, "pixels": pixels}


class Encoding:
    """Ray Data actor: the collection's encoder, loaded once per actor, turning decoded blocks into catalogue rows."""

    def __init__(self, index_dir: str, error_share: float, threads: int, runtime: str):
        from encoder.embed import Encoder
        from encoder.runtime import configure_threads

        configure_threads(threads)  # the CPUs this actor reserved, not every core of its node
        # The driver's runtime: an actor is another process, where the CLI's choice was never made.
        self.encoder = Encoder.load(index_dir, runtime=runtime)  # hash-checked against encoder.json
        self.error_share = error_share

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["relpath"])
        entries = _entries(batch)
        decoded = [DecodedFile(entries[i], batch["pixels"][i], "", str(batch["sha256"][i]), int(batch["width"][i]),
                               int(batch["height"][i])) for i in np.flatnonzero(batch["ok"])]
        rows = encode_batch(self.encoder, decoded, self.error_share)
        code = np.zeros((n, self.encoder.code_size), np.float32)  # (n, code_size)
        error = np.full(n, np.nan, np.float64)  # NaN: not measured (or not encoded)
        sketch = np.zeros((n, SKETCH_BYTES), np.uint8)  # (n, SKETCH_BYTES)
        for i, row in zip(np.flatnonzero(batch["ok"]), rows):
            code[i] = row.code
            if row.sketch is not None:  # encode_batch always makes one
                sketch[i] = row.sketch
            if row.recon_error is not None:
                error[i] = row.recon_error
        kept = ("relpath", "size", "mtime_ns", "ok", "reason", "sha256", "width", "height")
        return {**{k: batch[k] for k in kept}, "code": code, "error": error, "sketch": sketch}


def _entries(batch: dict[str, np.ndarray]) -> list[FileEntry]:
    return [FileEntry(str(p), int(s), int(m)) for p, s, m in zip(batch["relpath"], batch["size"], batch["mtime_ns"])]


def encoded_batch(batch: dict[str, np.ndarray]) -> EncodedBatch:
    """An encoded block from the actors as the writer's EncodedBatch (rows in order, failures with reasons)."""
    rows: list[NewImage] = []
    failed: list[tuple[FileEntry, str]] = []
    for i, entry in enumerate(_entries(batch)):
        if not batch["ok"][i]:
            failed.append((entry, str(batch["reason"][i])))
            continue
        error = float(batch["error"][i])
        rows.append(NewImage(entry.relpath, entry.size, entry.mtime_ns, str(batch["sha256"][i]), int(batch["width"][i]),
                             int(batch["height"][i]), batch["code"][i].astype(np.float32),
                             None if math.isnan(error) else error, batch["sketch"][i].astype(np.uint8)))
    return EncodedBatch(rows, failed)


class RayEngine:
    """Decode in Ray tasks and encode in a pool of Ray actors, on the cluster at `address` or a local instance."""

    def __init__(self, address: str = "", encoders: int = 0, progress: bool = True, cpus: int | None = None):
        self.address = address  # "": start a local Ray instance for the build (and stop it after)
        self.encoders = encoders  # actors in the encoder pool; 0: half the cluster's CPUs, at least one
        self.progress = progress
        self.cpus = cpus  # CPUs of a local instance (None: every core); a cluster's nodes declare their own

    @contextmanager
    def run(self, job: EncodeJob) -> Iterator[Iterator[EncodedBatch]]:
        """Connect to (or start) Ray and stream the job through it; leaving stops the dataset and what this started."""
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            try:
                connect(self.address, self.cpus)
            except (ConnectionError, RuntimeError, ValueError) as why:
                raise EngineFailed(f"cannot reach the Ray cluster at {self.address or 'a local instance'}: "
                                   f"{_first_line(why)}") from None
        try:
            # job.decoded (the training sample, decoded on the driver) is not shipped: decoding those files again in
            # the tasks costs less than sending their pixels to the cluster, and gives the same pixels.
            dataset = self._dataset(job)
            yield _stream(dataset)
        finally:
            if started_here:
                ray.shutdown()

    def _dataset(self, job: EncodeJob) -> Any:
        import pyarrow as pa
        import ray
        import ray.data

        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # plan order: the ids the local engine hands out
        context.enable_progress_bars = self.progress
        cpus = int(ray.cluster_resources().get("CPU", 1))
        encoders = self.encoders or max(1, cpus // 2)
        if encoders >= cpus:  # the actors hold their CPUs for the whole run: decoding would never be scheduled
            raise EngineFailed(f"{encoders} encoder actors leave none of the cluster's {cpus} CPUs for decoding; "
                               f"use --ray-encoders {max(1, cpus - 1)} or fewer")
        log.info("Ray: %d CPUs in the cluster, %d encoder actors, %d files in tasks of %d", cpus, encoders,
                 len(job.entries), FILES_PER_TASK)
        table = pa.table({"relpath": [e.relpath for e in job.entries], "size": [e.size for e in job.entries],
                          "mtime_ns": [e.mtime_ns for e in job.entries]})
        blocks = [table.slice(start, FILES_PER_TASK) for start in range(0, max(len(job.entries), 1), FILES_PER_TASK)]
        return (ray.data.from_arrow(blocks)
                .map_batches(decode_files, batch_size=FILES_PER_TASK, batch_format="numpy", num_cpus=1,
                             fn_kwargs={"root": str(job.root), "size": job.image_size, "channels": job.channels})
                .map_batches(Encoding, batch_size=ENCODE_BATCH, batch_format="numpy", num_cpus=1,
                             memory=ENCODER_MEMORY,
                             compute=ray.data.ActorPoolStrategy(size=encoders),
                             fn_constructor_kwargs={"index_dir": str(job.index_dir), "error_share": job.error_share,
                                                    "threads": 1, "runtime": chosen_runtime()}))


def _stream(dataset: Any) -> Iterator[EncodedBatch]:
    """The dataset's blocks as EncodedBatches, in plan order; a failure on the cluster becomes EngineFailed."""
    from ray.exceptions import RayError

    try:
        for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield encoded_batch(block)
    except RayError as why:
        raise EngineFailed(f"the Ray engine failed: {_first_line(why)}") from why


def _first_line(error: BaseException) -> str:
    """The last non-empty line of an error's text: for Ray's wrapped errors, the original exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def connect(address: str = "", cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start a local instance with `cpus`; workers import lookalike from the
    same folder as this process (on a real cluster: where it is installed on every node)."""
    import ray

    path = os.pathsep.join(p for p in (PACKAGES_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}}
    log.info("Ray: %s", f"joining the cluster at {address}" if address else "starting a local instance")
    # "local": a new local instance even where RAY_ADDRESS names a cluster (LOOKALIKE_RAY_ADDRESS is ours to say).
    ray.init(address=address or "local", num_cpus=None if address else cpus, runtime_env=runtime_env,
             include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
