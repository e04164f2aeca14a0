"""Speed at every size, beside the naive way of building the same thing, measured in one run on the same data.

    python benchmarks/speed.py [--data ../shared/data] [--sizes 10000 100000 1000000] [--load-seconds 60]
                               [--photos 4000] [--out benchmarks/results]
    python benchmarks/speed.py --quick     # small sizes and short runs: checks the machinery in a minute or two

1. Indexing: the real CLI (`indexer build`) on the CIFAR-10 JPEG folders and on a folder of 1024x768 photographs
   (4,000 made by upscaling the Caltech-101 photos of ../shared/data, as none that large are stored), next to
   - the pure Pillow decode rate of the same files with the same number of processes: the practical limit;
   - the naive indexer: one Keras predict() per image after a full-size decode and resize.
   The pipeline rate is build() run afresh in the benchmark's process, where TensorFlow already runs (what a
   long-lived indexer pays): BuildReport.timings["index"], the model load, decode, encode and commit, overlapped.
   The wall rate is the CLI from process start, with Python's and TensorFlow's start-up (~3 s). Beside them, the
   encoder alone on in-memory pixels: the bound that the encoding stage sets.
2. Collections of each --sizes: the CIFAR-10 collection's real codes, and above that synthetic codes drawn to
   match them (a real code plus gaussian noise at a quarter of the codes' per-dimension spread, back on the unit
   sphere like the real ones), written through the real catalogue and vectors code. For each: the index chosen
   and its measured recall, vector bytes per image, server start-up time, single-query latency over HTTP with the
   real server (CIFAR-10 test JPEGs as queries), and in-process vector search latency.
3. Load: 8 client threads for --load-seconds against the largest size up to 100k, then against the naive server
   (benchmarks/naive_server.py: predict() per request, numpy brute force) on the same collection.
4. The query's floor (issue 17), in this process on the same query JPEGs: decode + the encoder's per-image cost in
   a batch of 256 + the vector search at the load size, in wall and CPU time; beside it the cost of the
   out-of-domain check (the decoder's pass, the complexity and the judgement), one image's encoder call, and an
   empty HTTP round trip (GET /api/health). HTTP p50 and the sustained rate are then compared with the floor.
The header names the CPU's vector instruction sets (AVX2, AVX-512, AMX), any ONEDNN_MAX_CPU_ISA restriction and the
inference runtime, so that runs on two machines can be compared.
Writes speed.json, speed.md (the README's tables) and speed.png to --out; skips cleanly without the data.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from benchmarks.harness import free_port, start_server, stop_server  # noqa: E402  polls until the server answers
from encoder.store import copy_model  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
PHOTO_SIZE = (1024, 768)
CLIENT_THREADS = 8
# Issues 4 and 17's targets: (name, key in results["targets_measured"], goal, higher is better). Issue 17's are
# ratios to the query's floor measured in the same run, so that they hold on any 2-core machine.
TARGETS = (
    ("Indexing rate / pure decode rate, CIFAR-10", "cifar_index_over_decode", 0.5, True),
    ("Indexing rate / pure decode rate, 1024x768 photos", "photos_index_over_decode", 0.7, True),
    ("HTTP search p50 at 100k / the query's floor", "p50_over_floor", 2.0, False),
    ("Queries/s, 8 clients / (cores ÷ the floor's CPU time)", "qps_over_floor_rate", 0.6, True),
    ("Query rate / naive server's", "qps_over_naive", 20.0, True),
    ("HTTP p50 with the out-of-domain check / without", "check_over_no_check", 2.0, False),
    ("HTTP search p50 at 100k, ms", "p50_100k_ms", 10.0, False),
    ("HTTP search p99 at 100k, ms", "p99_100k_ms", 25.0, False),
    ("Sustained queries/s, 8 clients", "sustained_qps", 200.0, True),
    ("Errors under load", "load_errors", 0, False),
    ("Recall@10 of the approximate index vs exact", "min_recall_at_10", 0.98, True),
    ("Vector search p50 at 1M, ms", "search_p50_1m_ms", 2.0, False),
    ("Vector bytes per image at 1M", "bytes_per_image_1m", 300.0, False),
    ("Server start-up at 1M, s", "startup_1m_s", 10.0, False),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# 1. Indexing

def pillow_decode(path: str) -> int:
    """The baseline's unit of work: open and fully decode one file to RGB."""
    with Image.open(path) as im:
        return im.convert("RGB").size[0]


def decode_rate(files: list[str], workers: int) -> float:
    """Images/s for a plain Pillow decode of `files` with `workers` processes, from a warm page cache."""
    for f in files:  # the build that follows reads warm files too: compare decoding, not the first disk read
        Path(f).read_bytes()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        list(pool.imap_unordered(pillow_decode, files[:64], chunksize=16))  # start-up is not decoding
        started = time.perf_counter()
        for _ in pool.imap_unordered(pillow_decode, files, chunksize=64):
            pass
    return len(files) / (time.perf_counter() - started)


def cli(*args: str) -> tuple[dict, float]:
    """Run `python -m indexer ...`; returns its JSON summary and wall seconds."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "indexer", *args, "--quiet"], cwd=REPO, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"indexer {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), time.perf_counter() - started


def naive_index_rate(index_dir: Path, files: list[str]) -> float:
    """Images/s of the naive indexer: full decode, resize, one Keras predict() per image."""
    import keras

    import encoder.model  # noqa: F401
    from benchmarks.naive_server import naive_pixels
    from encoder.store import read_info

    info = read_info(index_dir)
    model = keras.saving.load_model(index_dir / "encoder.keras", compile=False)
    size, channels = int(info["image_size"]), int(info["channels"])
    model.encoder.predict(naive_pixels(Path(files[0]).read_bytes(), size, channels), verbose=0)  # warm-up
    started = time.perf_counter()
    for f in files:
        model.encoder.predict(naive_pixels(Path(f).read_bytes(), size, channels), verbose=0)
    return len(files) / (time.perf_counter() - started)


def encoder_rate(index_dir: Path, n: int = 4096) -> dict[str, float]:
    """Images/s of the collection's encoder alone on in-memory pixels: the bound the encoding stage sets."""
    from encoder.embed import Encoder

    encoder = Encoder.load(index_dir)
    pixels = np.random.default_rng(0).integers(0, 256, (n, encoder.image_size, encoder.image_size,
                                                         encoder.channels), dtype=np.uint8)
    rates = {}
    for name, fn in (("encode", encoder.encode), ("encode_with_error", encoder.encode_with_error)):
        fn(pixels[: encoder.batch_size])  # warm-up: graph tracing
        started = time.perf_counter()
        fn(pixels)
        rates[name] = round(n / (time.perf_counter() - started), 1)
    return rates


def query_floor(index_dir: Path, payloads: list[bytes], search_ms: float) -> dict:
    """The query's floor and the parts around it, in this process, on the query JPEGs (see the module docstring)."""
    from encoder.embed import Encoder
    from encoder.preprocess import load_image
    from encoder.runtime import cores
    from indexer.copies import sketches

    encoder = Encoder.load(index_dir)
    size, channels = encoder.image_size, encoder.channels

    def timed(fn, repeat: int) -> tuple[float, float]:
        """Median wall ms and mean CPU ms (every thread of this process) of `fn()`."""
        walls = []
        cpu_started = time.process_time()
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            walls.append((time.perf_counter() - started) * 1000)
        return float(np.median(walls)), (time.process_time() - cpu_started) * 1000 / repeat

    data = payloads[:256]
    decoded = [load_image(d, size, channels).pixels for d in data]
    pixels = np.stack(decoded)  # (n, S, S, C): the queries as the model sees them
    decode_wall, decode_cpu = timed(lambda: [load_image(d, size, channels) for d in data], 5)
    encoder.encode_for_query(pixels)  # warm-up at this batch size
    batch_wall, batch_cpu = timed(lambda: encoder.encode(pixels), 10)
    check_wall, check_cpu = timed(lambda: encoder.encode_for_query(pixels), 10)
    one = pixels[:1]
    single_wall, _ = timed(lambda: encoder.encode(one), 200)
    single_check_wall, _ = timed(lambda: encoder.encode_for_query(one), 200)
    _, errors, latents = encoder.encode_for_query(one)
    judge_wall, judge_cpu = timed(lambda: encoder.judge(one, errors, latents), 200)
    sketch_wall, _ = timed(lambda: sketches(one), 200)
    n = len(data)
    parts = {"decode_ms": decode_wall / n, "encoder_batch_ms": batch_wall / n, "vector_search_ms": search_ms}
    cpu = {"decode_ms": decode_cpu / n, "encoder_batch_ms": batch_cpu / n, "vector_search_ms": search_ms}
    floor, floor_cpu = sum(parts.values()), sum(cpu.values())
    return {"runtime": encoder.runtime, "images": n, "parts_ms": {k: round(v, 4) for k, v in parts.items()},
            "parts_cpu_ms": {k: round(v, 4) for k, v in cpu.items()}, "floor_ms": round(floor, 4),
            "floor_cpu_ms": round(floor_cpu, 4), "floor_rate_per_s": round(cores() / (floor_cpu / 1000), 1),
            "check_batch_extra_ms": round((check_wall - batch_wall) / n, 4),
            "check_batch_extra_cpu_ms": round((check_cpu - batch_cpu) / n, 4),
            "judge_ms": round(judge_wall, 4), "judge_cpu_ms": round(judge_cpu, 4), "sketch_ms": round(sketch_wall, 4),
            "encoder_single_ms": round(single_wall, 4), "encoder_single_with_check_ms": round(single_check_wall, 4)}


def in_process_build(folder: Path, index: Path) -> dict:
    """build() of `folder` afresh with the same model, in this process, where TensorFlow is already running.

    What a long-lived indexer pays per image: the CLI's wall time adds Python's and TensorFlow's start-up
    (~3 s), which decoding overlaps but which dominates a folder of a few thousand images.
    """
    from indexer.build import BuildOptions, build

    again = index.parent / f"{index.name}-again"
    copy_model(index, again)
    try:
        report = build(folder, again, BuildOptions(progress=False))
    finally:
        shutil.rmtree(again, ignore_errors=True)
    return {"indexed": report.indexed, "timings": {k: round(v, 3) for k, v in report.timings.items()}}


def make_photo(job: tuple[str, str, int]) -> str:
    """One 1024x768 JPEG upscaled from `source`, with mild noise (seeded by `i`) so that no two are alike."""
    source, target, i = job
    with Image.open(source) as im:
        big = np.asarray(im.convert("RGB").resize(PHOTO_SIZE, Image.BICUBIC), np.int16)
    noisy = np.clip(big + np.random.default_rng(i).normal(0, 3, big.shape), 0, 255).astype(np.uint8)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy).save(target, quality=90)
    return target


def make_photos(source: Path, out: Path, count: int) -> list[str]:
    """`count` 1024x768 JPEGs upscaled from the photos in `source`, made in one process per core."""
    sources = sorted(source.rglob("*.jpg"))[:count]
    jobs = [(str(path), str(out / path.parent.name / f"{i:05d}.jpg"), i) for i, path in enumerate(sources)]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
        return pool.map(make_photo, jobs, chunksize=32)


def measure_indexing(name: str, folder: Path, files: list[str], work: Path, epochs: int, naive_n: int) -> dict:
    """Decode baseline, lookalike's build, the naive indexer, on the same files."""
    workers = os.cpu_count() or 1
    index = work / f"index-{name}"
    decode = decode_rate(files, workers)
    log(f"{name}: pure Pillow decode {decode:,.0f} images/s ({workers} processes, {len(files):,} files)")
    trained, train_s = cli("train", str(folder), "--index", str(index), "--epochs", str(epochs),
                           "--max-train-images", "5000")
    built, build_s = cli("build", str(folder), "--index", str(index))
    log(f"{name}: lookalike CLI indexed {built['indexed']:,} in {build_s:.1f}s wall ({built['timings']})")
    alone = encoder_rate(index)  # also starts TensorFlow in this process, for the in-process build
    log(f"{name}: the encoder alone, in memory: {alone} images/s")
    again = in_process_build(folder, index)
    pipeline = again["indexed"] / again["timings"]["index"]
    log(f"{name}: lookalike in-process build {pipeline:,.0f} images/s ({again['timings']})")
    naive = naive_index_rate(index, files[:naive_n])
    log(f"{name}: naive indexer (predict() per image) {naive:,.1f} images/s on {naive_n} files")
    _, rerun_s = cli("build", str(folder), "--index", str(index))
    return {"files": len(files), "decode_per_s": round(decode, 1), "pipeline_per_s": round(pipeline, 1),
            "wall_per_s": round(built["indexed"] / build_s, 1), "wall_seconds": round(build_s, 2),
            "timings": built["timings"], "in_process_timings": again["timings"],
            "encoder_alone_per_s": alone["encode"], "encoder_with_error_per_s": alone["encode_with_error"],
            "naive_per_s": round(naive, 1), "naive_files": naive_n,
            "over_decode": round(pipeline / decode, 3), "over_naive": round(pipeline / naive, 1),
            "train_seconds": round(train_s, 1), "epochs": epochs, "unchanged_rerun_seconds": round(rerun_s, 2),
            "index": str(index)}


# ---------------------------------------------------------------------------------------------------------------
# 2. Collections of each size

def synthetic_codes(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` codes like `real` (m, d): the real ones first, then resampled real codes plus noise."""
    if n <= len(real):
        return real[:n]
    rng = np.random.default_rng(seed)
    extra = real[rng.integers(0, len(real), n - len(real))]  # (n - m, d)
    extra = extra + rng.normal(size=extra.shape).astype(np.float32) * (0.25 * real.std(axis=0))
    norms = np.linalg.norm(real, axis=1)
    if np.allclose(norms, 1.0, atol=1e-3):  # unit codes: keep the synthetic ones on the sphere too
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([real, extra.astype(np.float32)])


def make_collection(source: Path, target: Path, n: int) -> dict:
    """A collection of `n` images with the source collection's model: real codes, then synthetic ones."""
    from indexer.catalog import Catalog, NewImage
    from indexer.collection import MODEL_KEY, load_vectors

    copy_model(source, target)
    with Catalog(source, readonly=True) as real:
        info = json.loads((source / "encoder.json").read_text())
        _, codes = real.all_codes(int(info["code_size"]))
        relpaths = real.relpaths()
        root, model = real.get_meta("root"), real.get_meta(MODEL_KEY)
    codes = synthetic_codes(codes, n)
    started = time.perf_counter()
    with Catalog(target) as catalog:
        for start in range(0, n, 100_000):
            rows = [NewImage(relpaths[i] if i < len(relpaths) else f"synthetic/{i:07d}.jpg", 1, 1, "0" * 64, 32, 32,
                             codes[i], 0.01 if i % 50 == 0 else None) for i in range(start, min(n, start + 100_000))]
            with catalog.conn:
                catalog.upsert(rows)
        with catalog.conn:
            catalog.set_meta(MODEL_KEY, model)
            catalog.set_meta("root", root)
            catalog.bump_generation()
        catalog_s = time.perf_counter() - started
        started = time.perf_counter()
        vectors = load_vectors(catalog, target, int(info["code_size"]), save=True)
        vectors_s = time.perf_counter() - started
    meta = vectors.meta
    return {"images": n, "synthetic": max(0, n - len(relpaths)), "catalog_seconds": round(catalog_s, 1),
            "vectors_seconds": round(vectors_s, 1), "index_kind": meta["kind"], "nlist": meta.get("nlist"),
            "nprobe": meta.get("nprobe"), "recall_at_10": meta["recall_at_10"],
            "vector_bytes_per_image": round(meta["file_bytes"] / n, 1),
            "catalog_bytes_per_image": round((target / "catalog.sqlite").stat().st_size / n, 1)}


def vector_search_ms(index_dir: Path, queries: np.ndarray) -> dict:
    """In-process latency of one-query searches on the saved (memory-mapped) index."""
    from indexer.catalog import Catalog
    from indexer.vectors import VectorIndex, set_threads

    set_threads(1)
    with Catalog(index_dir, readonly=True) as catalog:
        generation = catalog.generation
    started = time.perf_counter()
    vectors = VectorIndex.load(index_dir, generation)
    open_ms = (time.perf_counter() - started) * 1000
    times = []
    for q in queries:
        t = time.perf_counter()
        vectors.search(q[None], 10)
        times.append((time.perf_counter() - t) * 1000)
    return {**percentiles(times), "open_ms": round(open_ms, 1)}


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 of a list of milliseconds."""
    q = np.percentile(samples_ms, [50, 95, 99]) if samples_ms else [float("nan")] * 3
    return {"p50": round(float(q[0]), 2), "p95": round(float(q[1]), 2), "p99": round(float(q[2]), 2)}


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class Searcher:
    """A lean HTTP/1.1 client on one kept-alive connection (http.client): a load generator that spends little of
    the 2 cores it shares with the server. It sends what SearchClient.search sends: the image as the raw body."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; a broken connection is reopened for the next one."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def sequential_ms(url: str, payloads: list[bytes | None], n: int, path: str = "/api/search?k=10") -> list[float]:
    """Milliseconds per request, one after another (after a warm-up): a POST of each payload in turn, or a GET
    where the payload is None (`[None]` times GET /api/health: the HTTP stack's own round trip)."""
    times = []
    searcher = Searcher(url)
    try:
        for i in range(n + 10):
            payload = payloads[i % len(payloads)]
            started = time.perf_counter()
            status, body = searcher.request("GET" if payload is None else "POST", path, payload)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
            if i >= 10:
                times.append((time.perf_counter() - started) * 1000)
    finally:
        searcher.close()
    return times


def load(url: str, payloads: list[bytes], seconds: float, threads: int = CLIENT_THREADS) -> dict:
    """`threads` clients searching back to back for `seconds`: rate, errors, latency."""
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads

    def client(t: int) -> None:
        searcher = Searcher(url)
        i = t
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                ok = searcher.request("POST", "/api/search?k=10", payloads[i % len(payloads)])[0] == 200
            except (OSError, http.client.HTTPException):
                ok = False
            latencies[t].append((time.perf_counter() - started) * 1000)
            errors[t] += not ok
            i += threads
        searcher.close()

    started = time.monotonic()
    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    done = sum(len(x) for x in latencies)
    return {"threads": threads, "seconds": round(elapsed, 1), "requests": done, "errors": sum(errors),
            "qps": round(done / elapsed, 1), **percentiles([v for x in latencies for v in x])}


def start_naive(index_dir: Path) -> tuple[subprocess.Popen, str]:
    """benchmarks/naive_server.py on a free port, once /api/health answers."""
    port = free_port()
    # stderr to a file, not a pipe: an unread pipe fills up under load and blocks the server's logging.
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "naive_server.py"), "--index",
                                str(index_dir), "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"naive server exited: {log.read()[-2000:]}")
        try:
            if requests.get(url + "/api/health", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("naive server did not start")


# ---------------------------------------------------------------------------------------------------------------
# Report

def measured_targets(r: dict) -> dict:
    """The values the TARGETS table compares."""
    sizes = {c["images"]: c for c in r.get("collections", [])}
    big = sizes.get(1_000_000, {})
    at_100k = sizes.get(100_000, {})
    approximate = [c["recall_at_10"] for c in r.get("collections", []) if c["index_kind"] != "exact"]
    at_load = sizes.get(r.get("load", {}).get("images"), {})
    floor = r.get("floor", {})
    p50, quick = at_load.get("http_ms", {}).get("p50"), at_load.get("http_no_check_ms", {}).get("p50")
    qps = r.get("load", {}).get("lookalike", {}).get("qps")
    return {
        "p50_over_floor": round(p50 / floor["floor_ms"], 2) if p50 and floor else None,
        "qps_over_floor_rate": round(qps / floor["floor_rate_per_s"], 3) if qps and floor else None,
        "check_over_no_check": round(p50 / quick, 3) if p50 and quick else None,
        "cifar_index_over_decode": r.get("indexing", {}).get("cifar10", {}).get("over_decode"),
        "photos_index_over_decode": r.get("indexing", {}).get("photos", {}).get("over_decode"),
        "p50_100k_ms": at_100k.get("http_ms", {}).get("p50"),
        "p99_100k_ms": at_100k.get("http_ms", {}).get("p99"),
        "sustained_qps": r.get("load", {}).get("lookalike", {}).get("qps"),
        "load_errors": r.get("load", {}).get("lookalike", {}).get("errors"),
        "qps_over_naive": r.get("load", {}).get("qps_over_naive"),
        "min_recall_at_10": min(approximate) if approximate else None,
        "search_p50_1m_ms": big.get("vector_search_ms", {}).get("p50"),
        "bytes_per_image_1m": big.get("vector_bytes_per_image"),
        "startup_1m_s": big.get("startup_seconds"),
    }


def markdown(r: dict) -> str:
    """The README's tables."""
    m = r["targets_measured"]
    machine = r["machine"]
    features = ", ".join(machine.get("cpu_features") or ["no AVX2"])
    isa = f"; oneDNN held to {machine['onednn_max_cpu_isa']}" if machine.get("onednn_max_cpu_isa") else ""
    lines = [f"{machine['cpus']} CPU cores ({features}{isa}), Python {machine['python']}, encoder on "
             f"{machine.get('runtime', 'tensorflow')}; run of {r['date']}", "",
             "| Target | Goal | Measured | Met |", "|---|---:|---:|:---:|"]
    for title, key, goal, higher in TARGETS:
        value = m.get(key)
        met = "" if value is None else ("yes" if (value >= goal if higher else value <= goal) else "**no**")
        lines.append(f"| {title} | {'≥' if higher else '≤'} {goal:g} | {'—' if value is None else f'{value:g}'} "
                     f"| {met} |")
    if r.get("floor"):
        f, c = r["floor"], r["floor"]["parts_cpu_ms"]
        at_load = {x["images"]: x for x in r.get("collections", [])}.get(r.get("load", {}).get("images"), {})
        lines += ["", f"Where a query's time goes ({r['load']['images']:,} images; ms per query; the floor's parts "
                  f"in a batch of {f['images']} CIFAR-10 test JPEGs, in this process, wall and CPU):", "",
                  "| Part | Wall ms | CPU ms |", "|---|---:|---:|",
                  f"| decode (read, decode, resize) | {f['parts_ms']['decode_ms']:.3f} | {c['decode_ms']:.3f} |",
                  f"| encoder, per image in a batch | {f['parts_ms']['encoder_batch_ms']:.3f} | "
                  f"{c['encoder_batch_ms']:.3f} |",
                  f"| vector search (p50) | {f['parts_ms']['vector_search_ms']:.3f} | {c['vector_search_ms']:.3f} |",
                  f"| **the floor** | **{f['floor_ms']:.3f}** | **{f['floor_cpu_ms']:.3f}** |",
                  f"| out-of-domain check: decoder pass per image in a batch | "
                  f"{f['check_batch_extra_ms']:.3f} | {f['check_batch_extra_cpu_ms']:.3f} |",
                  f"| out-of-domain check: complexity and judgement | {f['judge_ms']:.3f} | {f['judge_cpu_ms']:.3f} |",
                  f"| encoder, one image alone / with the check | {f['encoder_single_ms']:.3f} / "
                  f"{f['encoder_single_with_check_ms']:.3f} | |",
                  f"| HTTP round trip of GET /api/health (p50) | {at_load.get('health_ms', {}).get('p50', '—')} | |",
                  f"| HTTP search p50 without / with the check | {at_load.get('http_no_check_ms', {}).get('p50', '—')} "
                  f"/ {at_load.get('http_ms', {}).get('p50', '—')} | |",
                  f"| the floor's rate on {r['machine']['cpus']} cores (cores ÷ CPU ms), queries/s | "
                  f"{f['floor_rate_per_s']:,.0f} | |"]
    if r.get("indexing"):
        lines += ["", "Indexing (images/s; pipeline = build() in a process where TensorFlow already runs: model load, "
                  "decode, encode, commit, overlapped; wall = the CLI from process start, with Python's and "
                  "TensorFlow's start-up; encoder alone = the model on in-memory pixels, without / with the "
                  "reconstruction pass that the pipeline runs on every image, for outliers):", "",
                  "| Folder | Files | Pure decode | lookalike pipeline | lookalike wall | Encoder alone "
                  "| Naive (predict() per image) | lookalike / decode | lookalike / naive |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, ix in r["indexing"].items():
            alone = (f"{ix['encoder_alone_per_s']:,.0f} / {ix['encoder_with_error_per_s']:,.0f}"
                     if "encoder_alone_per_s" in ix else "—")
            lines.append(f"| {name} | {ix['files']:,} | {ix['decode_per_s']:,.0f} | {ix['pipeline_per_s']:,.0f} | "
                         f"{ix['wall_per_s']:,.0f} | {alone} | {ix['naive_per_s']:,.1f} | {ix['over_decode']:.2f}× | "
                         f"{ix['over_naive']:,.0f}× |")
    if r.get("collections"):
        lines += ["", "Collections (codes beyond the real CIFAR-10 ones are synthetic; HTTP = search by image, "
                  "sequential, real server):", "",
                  "| Images | Index | Recall@10 | Vector bytes/image | Build s | Start-up s | Server RSS MB "
                  "| HTTP p50 / p95 / p99 ms | Vector search p50 / p99 ms |",
                  "|---:|---|---:|---:|---:|---:|---:|---|---|"]
        for c in r["collections"]:
            kind = c["index_kind"] + (f" ({c['nlist']} lists, nprobe {c['nprobe']})" if c.get("nlist") else "")
            h, v = c["http_ms"], c["vector_search_ms"]
            lines.append(f"| {c['images']:,} | {kind} | {c['recall_at_10']:.3f} | {c['vector_bytes_per_image']:g} | "
                         f"{c['vectors_seconds']:g} | {c['startup_seconds']:g} | {c['server_rss_mb']:g} | "
                         f"{h['p50']} / {h['p95']} / {h['p99']} | {v['p50']} / {v['p99']} |")
    if r.get("load"):
        ld = r["load"]
        lines += ["", f"Load: {CLIENT_THREADS} client threads searching by image back to back on the "
                  f"{ld['images']:,}-image collection:", "",
                  "| Server | Seconds | Requests | Errors | Queries/s | p50 / p95 / p99 ms |",
                  "|---|---:|---:|---:|---:|---|"]
        for name in ("lookalike", "naive"):
            x = ld.get(name)
            if x:
                lines.append(f"| {name} | {x['seconds']} | {x['requests']:,} | {x['errors']} | {x['qps']:,.1f} | "
                             f"{x['p50']} / {x['p95']} / {x['p99']} |")
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> None:
    """Three panels: indexing rates, latency by collection size, throughput against the naive server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    names = list(r.get("indexing", {}))
    x = np.arange(len(names))
    for j, (key, label, colour) in enumerate([("decode_per_s", "pure decode", "#999"),
                                               ("pipeline_per_s", "lookalike", "#2a7"),
                                               ("naive_per_s", "naive", "#d64")]):
        ax.bar(x + (j - 1) * 0.27, [r["indexing"][n][key] for n in names], 0.27, label=label, color=colour)
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("images / s (log)")
    ax.set_title("Indexing")
    ax.legend()
    ax = axes[1]
    sizes = [c["images"] for c in r.get("collections", [])]
    for p, style in (("p50", "o-"), ("p99", "s--")):
        ax.plot(sizes, [c["http_ms"][p] for c in r["collections"]], style, label=f"HTTP {p}")
        ax.plot(sizes, [c["vector_search_ms"][p] for c in r["collections"]], style, alpha=0.5,
                label=f"vector search {p}")
    ax.set_xscale("log")
    ax.set_xlabel("images in the collection")
    ax.set_ylabel("ms")
    ax.set_title("Single-query latency")
    ax.legend(fontsize=8)
    ax = axes[2]
    ld = r.get("load", {})
    servers = [s for s in ("lookalike", "naive") if ld.get(s)]
    ax.bar(servers, [ld[s]["qps"] for s in servers], color=["#2a7", "#d64"][: len(servers)])
    ax.set_ylabel("queries / s")
    ax.set_title(f"{CLIENT_THREADS} concurrent clients, {ld.get('images', 0):,} images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(r: dict, out: Path) -> None:
    """speed.json, speed.md and speed.png."""
    r["targets_measured"] = measured_targets(r)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "speed.md").write_text(markdown(r))
    chart(r, out / "speed.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding cifar10/ and caltech101/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--naive-load-seconds", type=float, default=20.0)
    parser.add_argument("--photos", type=int, default=4000, help="1024x768 photographs to generate and index")
    parser.add_argument("--queries", type=int, default=300, help="sequential HTTP queries per collection size")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (speed does not depend on them)")
    parser.add_argument("--limit", type=int, help="index at most this many CIFAR-10 files")
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs: a check, not a measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.load_seconds, args.naive_load_seconds = [2_000, 5_000], 3.0, 3.0
        args.photos, args.queries, args.epochs, args.limit = 60, 30, 1, args.limit or 2_000
    cifar = args.data / "cifar10"
    if not cifar.is_dir():
        print(f"skipped: {cifar} is absent; nothing written")
        return 0
    files = sorted(str(p) for p in cifar.rglob("*.jpg"))[: args.limit]
    from encoder.runtime import chosen_runtime, configure_runtime, cpu_features

    configure_runtime(os.environ.get("LOOKALIKE_RUNTIME") or chosen_runtime())  # as the CLI and server will
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform(), "cpu_features": cpu_features(),
                                 "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
                                 "runtime": chosen_runtime()}, "date": time.strftime("%Y-%m-%d"),
                     "arguments": {k: str(v) for k, v in vars(args).items()}, "indexing": {}, "collections": []}
    with tempfile.TemporaryDirectory(prefix="lookalike-speed-") as tmp:
        work = Path(tmp)
        folder = cifar
        if args.limit:  # a subset: copy the files into a folder of their own (the scanner refuses symlinks out)
            folder = work / "cifar10"
            for f in files:
                target = folder / Path(f).relative_to(cifar)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
        naive_n = 40 if args.quick else 300
        results["indexing"]["cifar10"] = measure_indexing("cifar10", folder, files, work, args.epochs, naive_n)
        caltech = args.data / "caltech101"
        if caltech.is_dir() and args.photos:
            photos = make_photos(caltech, work / "photos", args.photos)
            results["indexing"]["photos"] = measure_indexing("photos", work / "photos", photos, work, args.epochs,
                                                             naive_n // 3)
        write(results, args.out)

        source = Path(results["indexing"]["cifar10"]["index"])
        queries = [Path(f).read_bytes() for f in files if "/test/" in f][:500] or [Path(f).read_bytes()
                                                                                   for f in files[:500]]
        from indexer.catalog import Catalog

        with Catalog(source, readonly=True) as catalog:
            _, real_codes = catalog.all_codes(json.loads((source / "encoder.json").read_text())["code_size"])
        probe = synthetic_codes(real_codes, len(real_codes) + 1000, seed=1)[-1000:]  # fresh codes, like queries
        load_size = max([s for s in args.sizes if s <= 100_000] or args.sizes[:1])
        for n in args.sizes:
            index = work / f"collection-{n}"
            entry = make_collection(source, index, n)
            log(f"{n:,} images: {entry['index_kind']} index, recall@10 {entry['recall_at_10']}, "
                f"{entry['vector_bytes_per_image']} bytes/image, built in {entry['vectors_seconds']}s")
            entry["vector_search_ms"] = vector_search_ms(index, probe)
            started = time.perf_counter()
            server = start_server(index, cifar, [])
            entry["startup_seconds"] = round(time.perf_counter() - started, 2)
            try:
                entry["http_ms"] = percentiles(sequential_ms(server.url, queries, args.queries))
                entry["server_rss_mb"] = rss_mb(server.process.pid)
                log(f"{n:,} images: start-up {entry['startup_seconds']}s, HTTP {entry['http_ms']}, "
                    f"vector search {entry['vector_search_ms']}, RSS {entry['server_rss_mb']} MB")
                if n == load_size:
                    entry["http_no_check_ms"] = percentiles(sequential_ms(server.url, queries, args.queries,
                                                                          "/api/search?k=10&unusual=false"))
                    entry["health_ms"] = percentiles(sequential_ms(server.url, [None], args.queries, "/api/health"))
                    log(f"{n:,} images: HTTP without the out-of-domain check {entry['http_no_check_ms']}, "
                        f"GET /api/health {entry['health_ms']}")
                    results["load"] = {"images": n, "lookalike": load(server.url, queries, args.load_seconds)}
                    log(f"load on {n:,}: {results['load']['lookalike']}")
                    with requests.Session() as session:
                        metrics = session.get(f"{server.url}/metrics").text
                    results["load"]["metrics_lines"] = len(metrics.splitlines())
            finally:
                stop_server(server)
            results["collections"].append(entry)
            if n == load_size:
                results["floor"] = query_floor(index, queries, entry["vector_search_ms"]["p50"])
                log(f"the query's floor on {n:,}: {results['floor']}")
                process, url = start_naive(index)
                try:
                    naive = load(url, queries, args.naive_load_seconds)
                finally:
                    process.terminate()
                    process.wait(timeout=30)
                results["load"]["naive"] = naive
                results["load"]["qps_over_naive"] = round(
                    results["load"]["lookalike"]["qps"] / max(naive["qps"], 1e-9), 1)
                log(f"naive server on {n:,}: {naive}")
            shutil.rmtree(index, ignore_errors=True)
            write(results, args.out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
