"""Load with faults: concurrent searches, hostile uploads and writes against the real server; nothing may fail.

    python benchmarks/load_faults.py [--seconds 60] [--threads 8] [--out benchmarks/results]

Builds a collection from a copy of the demo photos in data/images (a small, quickly trained model: the subject
here is the server, not the codes), starts `python -m search_api` with a write token, then for --seconds runs
--threads clients that search by image back to back, one client in ten sending a file from the hostile corpus
instead (it must get a 4xx), and one writer that adds images (single and in pairs) and deletes some of them.
Afterwards the server is stopped and restarted, and every write it acknowledged is checked: each added image
still there and its own nearest neighbour, each deleted one gone. Any 5xx, connection error or lost write is a
failure. Writes load_faults.json and load_faults.md to --out.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.harness import make_image, start_server, stop_server  # noqa: E402
from tests.hostile import corpus  # noqa: E402

TOKEN = "load-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    make_image(seed, 64).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def run(images: Path, index: Path, seconds: float, threads: int) -> dict:
    """The load; returns the tally."""
    queries = [p.read_bytes() for p in sorted(images.rglob("*.jpg"))[:200]]
    hostile = [h for h in corpus() if h.expect == "error"]
    server = start_server(index, images, [], extra_env={"LOOKALIKE_API_TOKEN": TOKEN})
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    tally = {"searches": 0, "hostile": 0, "writes": 0, "deletes": 0, "server_errors": 0, "other_errors": 0,
             "hostile_not_4xx": 0, "latency_ms": []}
    added: dict[int, bytes] = {}  # id -> bytes, acknowledged and not deleted
    deleted: list[int] = []
    problems: list[str] = []

    def note(key: str, detail: str = "") -> None:
        with lock:
            tally[key] += 1
            if detail and len(problems) < 20:
                problems.append(detail)

    def searcher(t: int) -> None:
        rng = random.Random(t)
        with requests.Session() as session:
            while time.monotonic() < deadline:
                bad = rng.random() < 0.1
                pick = rng.choice(hostile) if bad else None
                name, data = (pick.name, pick.data) if pick else ("q.jpg", rng.choice(queries))
                started = time.perf_counter()
                try:
                    r = session.post(f"{server.url}/api/search?k=10", files={"image": (name, data)}, timeout=30)
                except requests.RequestException as exc:
                    note("other_errors", f"search: {exc}")
                    continue
                took = (time.perf_counter() - started) * 1000
                if r.status_code >= 500:
                    note("server_errors", f"{r.status_code} {r.text[:200]}")
                elif bad:
                    note("hostile") if 400 <= r.status_code < 500 else note("hostile_not_4xx", r.text[:200])
                elif r.status_code != 200 or len(r.json()["results"]) != 10:
                    note("other_errors", f"{r.status_code} {r.text[:200]}")
                else:
                    with lock:
                        tally["searches"] += 1
                        tally["latency_ms"].append(took)

    def writer() -> None:
        rng = random.Random(99)
        seed = 10_000
        with requests.Session() as session:
            while time.monotonic() < deadline:
                batch = [jpeg(seed + i) for i in range(rng.choice((1, 2)))]
                seed += len(batch)
                try:
                    r = session.post(f"{server.url}/api/images", headers=AUTH, timeout=30,
                                     files=[("image", (f"{i}.jpg", b)) for i, b in enumerate(batch)])
                    if r.status_code != 201:
                        note("server_errors" if r.status_code >= 500 else "other_errors", f"add {r.status_code}")
                        continue
                    with lock:
                        tally["writes"] += len(batch)
                        for a, b in zip(r.json()["added"], batch):
                            added[a["id"]] = b
                    if rng.random() < 0.3:
                        victim = rng.choice(list(added))
                        d = session.delete(f"{server.url}/api/images/{victim}", headers=AUTH, timeout=30)
                        if d.status_code != 200:
                            note("server_errors" if d.status_code >= 500 else "other_errors", f"delete {d.status_code}")
                            continue
                        with lock:
                            tally["deletes"] += 1
                            deleted.append(victim)
                            added.pop(victim)
                except requests.RequestException as exc:
                    note("other_errors", f"write: {exc}")
                time.sleep(0.05)

    queued: list[float] = []

    def watcher() -> None:  # how many requests wait for a server thread, from the server's own /metrics
        while time.monotonic() < deadline:
            for line in requests.get(f"{server.url}/metrics", timeout=30).text.splitlines():
                if line.startswith("lookalike_http_queued_requests "):
                    queued.append(float(line.split()[1]))
            time.sleep(0.5)

    workers = [threading.Thread(target=searcher, args=(t,)) for t in range(threads)] + \
        [threading.Thread(target=writer), threading.Thread(target=watcher)]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    # What the server logged at WARNING or above while under load (a busy server should not flood its log).
    warnings = [line for line in server.stderr().splitlines()
                if re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) ", line)]
    stop_server(server)
    # After a restart: every acknowledged write is there, every acknowledged delete is gone.
    server = start_server(index, images, [])
    lost = 0
    try:
        with requests.Session() as session:
            for image_id, data in added.items():
                r = session.post(f"{server.url}/api/search?k=1", files={"image": ("a.jpg", data)})
                lost += r.status_code != 200 or r.json()["results"][0]["distance"] > 1e-4 or \
                    session.get(f"{server.url}/api/images/{image_id}").content != data
            resurrected = sum(session.get(f"{server.url}/api/images/{i}").status_code != 404 for i in deleted)
    finally:
        stop_server(server)
    latencies = sorted(tally.pop("latency_ms"))
    pick = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)) if latencies else \
        (lambda q: None)
    return {**tally, "seconds": round(elapsed, 1), "threads": threads,
            "queries_per_s": round((tally["searches"] + tally["hostile"]) / elapsed, 1),
            "p50_ms": pick(0.5), "p99_ms": pick(0.99), "lost_writes": int(lost), "resurrected_deletes": resurrected,
            "kept_after_restart": len(added), "max_queued_requests": max(queued, default=None),
            "server_log_warnings": len(warnings), "server_log_sample": warnings[:5], "problems": problems}


def prepare(workdir: Path, photos: int) -> tuple[Path, Path]:
    """A copy of `photos` demo images, indexed with a small model."""
    images, index = workdir / "images", workdir / "index"
    for path in sorted((REPO / "data" / "images").rglob("*.jpg"))[:photos]:
        target = images / path.relative_to(REPO / "data" / "images")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    subprocess.run([sys.executable, "-m", "indexer", "build", str(images), "--index", str(index), "--epochs", "3",
                    "--image-size", "32", "--quiet"], cwd=REPO, check=True, timeout=900)
    return images, index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lookalike-load-") as tmp:
        images, index = prepare(Path(tmp), args.photos)
        result = run(images, index, args.seconds, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load_faults.json").write_text(json.dumps(result, indent=2) + "\n")
    table = ["| Seconds | Clients | Searches | Hostile uploads (4xx) | Writes | Deletes | Queries/s | p50 / p99 ms "
             "| 5xx | Other errors | Lost writes | Resurrected deletes |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
             f"| {result['seconds']} | {result['threads']} + 1 writer | {result['searches']:,} | {result['hostile']:,} "
             f"| {result['writes']} | {result['deletes']} | {result['queries_per_s']} | {result['p50_ms']} / "
             f"{result['p99_ms']} | {result['server_errors']} | {result['other_errors']} | {result['lost_writes']} "
             f"| {result['resurrected_deletes']} |"]
    (args.out / "load_faults.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    failed = result["server_errors"] + result["other_errors"] + result["hostile_not_4xx"] + result["lost_writes"] + \
        result["resurrected_deletes"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
