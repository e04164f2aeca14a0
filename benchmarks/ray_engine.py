"""The Ray engine beside the local one on the same folder, and how its rate grows with a local multi-node cluster.

    python benchmarks/ray_engine.py [--data ../shared/data] [--images 3000] [--out benchmarks/results]
    python benchmarks/ray_engine.py --quick        # a few hundred images: checks the machinery

One encoder is trained once on the folder (Caltech-101 photos, copied), then every configuration indexes the same
files from a copy of that untouched collection, with `indexer build` in a fresh process as a user runs it:
- local: the default engine (one decoding process per core, TensorFlow's threads in this process);
- ray, local instance: `--engine ray` with no address, as a user runs it on one machine;
- ray, clusters of several nodes on this machine (Ray's own `ray.cluster_utils.Cluster`), 1-2 CPUs per node.
For each: the start (from the summary's timings: decode workers and the model for the local engine, connecting to
or starting Ray for the Ray engine), the index stage after it (decode + encode + commit; for Ray this includes
starting the actors, which load TensorFlow and the model) and its rate, and the whole process's time. Ratios are
to the local engine of the same run.
Every configuration must produce the local collection's ids and paths, or the run fails.
Writes ray_engine.json and ray_engine.md to --out; skips cleanly without the data or without Ray.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
# (label, nodes, CPUs per node, encoder actors); None nodes: the engine's own local instance with every core.
CLUSTERS = [("2 nodes x 1 CPU", 2, 1, 1), ("2 nodes x 2 CPUs", 2, 2, 2), ("4 nodes x 1 CPU", 4, 1, 2)]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def copy_photos(source: Path, target: Path, count: int) -> int:
    """The first `count` Caltech-101 photos (sorted), copied into `target` by category."""
    files = sorted(p for p in source.rglob("*.jpg"))[:count]
    for f in files:
        out = target / f.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)
    return len(files)


def ids_and_paths(index: Path) -> list[tuple[int, str]]:
    from indexer.catalog import Catalog

    with Catalog(index, readonly=True) as catalog:
        return catalog.conn.execute("SELECT id, relpath FROM images ORDER BY id").fetchall()


def run(label: str, folder: Path, trained: Path, target: Path, *flags: str) -> dict:
    """`indexer build` of `folder` into a copy of `trained` with `flags`, in a fresh process as a user runs it (this
    process has imported Ray, which must not weigh on the local engine); the figures from its JSON summary."""
    shutil.copytree(trained, target)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "indexer", "build", str(folder), "--index", str(target), "-q",
                           *flags], cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label}: indexer build exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    timings = summary["timings"]
    index_s = timings["index"] - timings.get("load_model", 0.0)
    entry = {"engine": label, "images": summary["indexed"], "index_seconds": round(index_s, 2),
             "start_seconds": round(timings.get("load_model", 0.0), 2), "build_seconds": round(wall, 2),
             "index_rate": round(summary["indexed"] / max(index_s, 1e-9), 1),
             "build_rate": round(summary["indexed"] / max(wall, 1e-9), 1)}
    log(f"{label}: {entry}")
    return entry


def in_cluster(label: str, nodes: int, cpus: int, encoders: int, folder: Path, trained: Path, target: Path) -> dict:
    """`run` on a cluster of `nodes` nodes of `cpus` CPUs each, started on this machine."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        entry = run(label, folder, trained, target, "--engine", "ray", "--ray-address", cluster.address,
                    "--ray-encoders", str(encoders))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    return entry | {"nodes": nodes, "cpus_per_node": cpus, "encoders": encoders}


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']['cpus']} cores, {r['machine']['features']}; {r['images']:,} Caltech-101 photos; "
             f"{r['date']}.", "",
             "| Engine | Nodes x CPUs | Encoders | Start s | Index s | Images/s (index) | vs local "
             "| Build s (process) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    local = r["runs"][0]["index_rate"]
    for e in r["runs"]:
        shape = f"{e['nodes']} x {e['cpus_per_node']}" if "nodes" in e else "-"
        lines.append(f"| {e['engine']} | {shape} | {e.get('encoders', '-')} | {e['start_seconds']} | "
                     f"{e['index_seconds']} | {e['index_rate']:,.0f} | {e['index_rate'] / local:.2f} | "
                     f"{e['build_seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding caltech101/")
    parser.add_argument("--images", type=int, default=3000, help="Caltech-101 photos to index")
    parser.add_argument("--steps", type=int, default=200, help="training steps (speed does not depend on them)")
    parser.add_argument("--quick", action="store_true", help="a few hundred images and one cluster: a check")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from indexer.ray_engine import ray_available

    caltech = args.data / "caltech101"
    if not caltech.is_dir():
        print(f"skipped: {caltech} is absent; nothing written")
        return 0
    if not ray_available():
        print("skipped: Ray is not installed (pip install '.[ray]'); nothing written")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from encoder.runtime import cpu_features

    clusters = CLUSTERS[:1] if args.quick else CLUSTERS
    images = 300 if args.quick else args.images
    with tempfile.TemporaryDirectory(prefix="lookalike-ray-") as tmp:
        work = Path(tmp)
        folder = work / "photos"
        count = copy_photos(caltech, folder, images)
        subprocess.run([sys.executable, "-m", "indexer", "train", str(folder), "--index", str(work / "trained"),
                        "--steps", str(args.steps), "-q"], cwd=REPO, check=True, capture_output=True)
        runs = [run("local", folder, work / "trained", work / "local")]
        expected = ids_and_paths(work / "local")
        runs.append(run("ray, local instance", folder, work / "trained", work / "ray-local", "--engine", "ray") |
                    {"nodes": 1, "cpus_per_node": os.cpu_count(), "encoders": max(1, (os.cpu_count() or 1) // 2)})
        for number, (label, nodes, cpus, encoders) in enumerate(clusters):
            runs.append(in_cluster(f"ray, {label}", nodes, cpus, encoders, folder, work / "trained",
                                   work / f"cluster-{number}"))
        for entry, target in zip(runs[1:], ["ray-local", *(f"cluster-{i}" for i in range(len(clusters)))]):
            if ids_and_paths(work / target) != expected:
                raise SystemExit(f"{entry['engine']}: the collection differs from the local engine's")
    result = {"date": time.strftime("%Y-%m-%d"), "images": count, "runs": runs,
              "machine": {"cpus": os.cpu_count(), "features": ", ".join(cpu_features()) or "unknown",
                          "python": platform.python_version()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray_engine.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "ray_engine.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
