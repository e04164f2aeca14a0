"""Speed of the whole loop on a real folder: indexing rate beside the pure-decode rate, query latency over HTTP.

    python benchmarks/speed.py [--images ../shared/data/cifar10] [--epochs 5] [--queries 300]

Runs the real CLI and the real server (waitress) on the folder, and compares each figure with a baseline measured
in the same run on the same files, because this machine's speed drifts: indexing against a plain Pillow decode of
the same files with the same number of processes, and a search request against a /api/health request. Also checks
that 100 indexed images, queried through the API, come back as their own top hit. Writes
benchmarks/results/speed.json and speed.png and prints a markdown table. Skips cleanly when the folder is absent.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import start_server, stop_server  # noqa: E402  the same readiness-polling launcher as the tests

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "cifar10"
RESULTS = REPO / "benchmarks" / "results"


def pillow_decode(path: str) -> int:
    """The baseline's unit of work: open and fully decode one file to RGB."""
    with Image.open(path) as im:
        return im.convert("RGB").size[0]


def decode_rate(files: list[str], workers: int) -> float:
    """Images/s for a plain Pillow decode of `files` with `workers` processes."""
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(pillow_decode, files, chunksize=64):
            pass
    return len(files) / (time.perf_counter() - started)


def cli(*args: str) -> tuple[dict, float]:
    """Run `python -m indexer ...`; returns its JSON summary and wall seconds."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "indexer", *args, "--quiet"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout), time.perf_counter() - started


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 of a list of milliseconds."""
    q = np.percentile(samples_ms, [50, 95, 99])
    return {"p50": round(float(q[0]), 2), "p95": round(float(q[1]), 2), "p99": round(float(q[2]), 2)}


def time_requests(session: requests.Session, send, n: int) -> list[float]:
    """Milliseconds per call of `send(session, i)` over n sequential calls (after a short warm-up)."""
    for i in range(5):
        send(session, i).raise_for_status()
    times = []
    for i in range(n):
        started = time.perf_counter()
        send(session, i).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images to index")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (training is timed separately)")
    parser.add_argument("--queries", type=int, default=300, help="sequential HTTP queries to time")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.images.is_dir():
        print(f"skipped: {args.images} is absent")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    files = sorted(str(p) for p in args.images.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    workers = os.cpu_count() or 1
    results: dict = {"machine": {"cpus": workers, "python": platform.python_version(), "platform": platform.platform()},
                     "folder": str(args.images), "files": len(files)}

    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        baseline = decode_rate(files, workers)
        trained, train_s = cli("train", str(args.images), "--index", str(index), "--epochs", str(args.epochs))
        built, build_s = cli("build", str(args.images), "--index", str(index))
        rerun, rerun_s = cli("build", str(args.images), "--index", str(index))
        rate = built["indexed"] / build_s
        results["indexing"] = {
            "train_seconds": round(train_s, 1), "epochs": args.epochs,
            "build_seconds": round(build_s, 1), "indexed": built["indexed"], "skipped": built["skipped"],
            "images_per_s": round(rate, 1), "pillow_decode_images_per_s": round(baseline, 1),
            "ratio_to_decode": round(rate / baseline, 3),
            "unchanged_rerun_seconds": round(rerun_s, 2), "rerun_indexed": rerun["indexed"],
        }

        server = start_server(index, args.images, [])
        try:
            session = requests.Session()
            rng = np.random.default_rng(0)
            sample = [files[i] for i in rng.choice(len(files), args.queries, replace=False)]
            payloads = [Path(f).read_bytes() for f in sample]
            search_ms = time_requests(session, lambda s, i: s.post(
                f"{server.url}/api/search?k=10", files={"image": ("q.jpg", payloads[i % len(payloads)])}),
                args.queries)
            health_ms = time_requests(session, lambda s, i: s.get(f"{server.url}/api/health"), args.queries)
            by_id_ms = time_requests(session, lambda s, i: s.get(f"{server.url}/api/search?id={i + 1}&k=10"),
                                     args.queries)
            results["http"] = {"search_by_image_ms": percentiles(search_ms), "search_by_id_ms": percentiles(by_id_ms),
                               "health_ms": percentiles(health_ms),
                               "search_over_health_p50": round(statistics.median(search_ms)
                                                               / statistics.median(health_ms), 2)}
            # Self-retrieval spot check: 100 indexed images, each must come back as its own top hit.
            root = args.images.resolve()
            own, misses = 0, []
            for f in sample[:100]:
                hits = session.post(f"{server.url}/api/search?k=2", data=Path(f).read_bytes()).json()["results"]
                expected = Path(f).resolve().relative_to(root).as_posix()
                if hits[0]["path"] == expected:
                    own += 1
                else:
                    misses.append({"query": expected, "top": hits[0]["path"], "distance": hits[0]["distance"]})
            results["self_retrieval"] = {"queries": len(sample[:100]), "own_top_hit": own, "misses": misses}
        finally:
            stop_server(server)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out / "speed.png")
    print(table(results))
    return 0


def table(r: dict) -> str:
    """The README's markdown table."""
    ix, http = r["indexing"], r["http"]
    rows = [
        ("Indexing (decode + encode + commit), images/s", f"{ix['images_per_s']:,.0f}",
         f"{ix['ratio_to_decode']:.2f}× the plain Pillow decode rate ({ix['pillow_decode_images_per_s']:,.0f}/s)"),
        ("Training, s", f"{ix['train_seconds']:.0f}", f"{ix['epochs']} epochs at most, on up to 10,000 images"),
        ("Unchanged re-run, s", f"{ix['unchanged_rerun_seconds']:.2f}", f"{ix['rerun_indexed']} images encoded"),
        ("Search by image over HTTP, p50 / p95 / p99 ms",
         "{p50} / {p95} / {p99}".format(**http["search_by_image_ms"]),
         f"{http['search_over_health_p50']}× a /api/health round trip"),
        ("Search by id over HTTP, p50 / p95 / p99 ms", "{p50} / {p95} / {p99}".format(**http["search_by_id_ms"]), ""),
        ("Own image as top hit (API spot check)",
         f"{r['self_retrieval']['own_top_hit']} / {r['self_retrieval']['queries']}", ""),
    ]
    lines = [f"{r['files']:,} files in {Path(r['folder']).name}/, {r['machine']['cpus']} CPU cores", "",
             "| Measure | Value | Against the baseline |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def chart(r: dict, path: Path) -> None:
    """Two panels: indexing rate beside the decode rate; HTTP latency percentiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ix = r["indexing"]
    left.bar(["Pillow decode\n(baseline)", "lookalike\nindexing"],
             [ix["pillow_decode_images_per_s"], ix["images_per_s"]], color=["#999", "#2a7"])
    left.set_ylabel("images / s")
    left.set_title(f"Indexing {r['files']:,} files ({r['machine']['cpus']} cores)")
    names = ["health", "search by id", "search by image"]
    keys = ["health_ms", "search_by_id_ms", "search_by_image_ms"]
    x = np.arange(len(names))
    for j, p in enumerate(("p50", "p95", "p99")):
        right.bar(x + (j - 1) * 0.25, [r["http"][k][p] for k in keys], 0.25, label=p)
    right.set_xticks(x, names)
    right.set_ylabel("ms")
    right.set_title("HTTP latency, sequential requests")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
