"""How near-duplicate grouping grows with the collection: the neighbour graph and the groups, timed per size.

    python benchmarks/duplicates.py                       # 10,000 and 100,000 codes
    python benchmarks/duplicates.py --sizes 10000 100000 1000000

Codes are drawn like a real collection's (30 numbers, a few hundred clusters of look-alikes) with 1% planted
near-copies (an original's code plus noise at 3% of the typical nearest-neighbour distance). The vector index is
the one the graph uses (exact up to 20,000 images, an IVF index of the codes above); the threshold is the one
the copies of this synthetic collection would suggest. Reports seconds for the graph and the grouping, and how
many planted copies land in their original's group (recall) and how many grouped pairs are planted (precision).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.duplicates import duplicate_groups, suggest_threshold  # noqa: E402
from indexer.neighbours import GRAPH_EXACT_LIMIT, collection_graph  # noqa: E402
from indexer.vectors import VectorIndex, set_threads  # noqa: E402

D = 30
COPY_SHARE = 0.01


def synthetic_collection(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(ids, codes, original of each planted copy (-1 elsewhere), typical nearest-neighbour distance)."""
    rng = np.random.default_rng(seed)
    copies = int(n * COPY_SHARE)
    base = n - copies
    centres = rng.standard_normal((max(1, base // 200), D)).astype(np.float32) * 2.0
    codes = centres[rng.integers(0, len(centres), base)] + rng.standard_normal((base, D)).astype(np.float32) * 0.6
    typical = 0.6 * np.sqrt(2 * D) * (200 ** (-1 / D))  # the order of a nearest-neighbour distance in a cluster
    sources = rng.choice(base, copies, replace=False)
    noise = rng.standard_normal((copies, D)).astype(np.float32)
    noise *= 0.03 * typical / np.linalg.norm(noise, axis=1, keepdims=True)
    codes = np.concatenate([codes, codes[sources] + noise])
    ids = np.arange(1, n + 1, dtype=np.int64)
    original = np.full(n, -1, np.int64)
    original[base:] = ids[sources]
    return ids, codes, original, float(typical)


def measure(n: int, seed: int = 0) -> dict:
    """Build the index, the graph and the groups for `n` synthetic codes; times and quality."""
    ids, codes, original, typical = synthetic_collection(n, seed)
    started = time.perf_counter()
    vectors = VectorIndex.build(ids, codes, generation=1, exact_limit=GRAPH_EXACT_LIMIT)  # what collection_graph uses
    index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    graph = collection_graph(ids, codes, vectors)
    graph_seconds = time.perf_counter() - started
    copy_distances = np.linalg.norm(codes[original >= 0] - codes[original[original >= 0] - 1], axis=1)
    threshold = suggest_threshold(graph.nearest, copy_distances)
    started = time.perf_counter()
    groups = duplicate_groups(graph, dict(zip(ids.tolist(), codes)), threshold)
    group_seconds = time.perf_counter() - started
    group_of = {i: g for g, group in enumerate(groups) for i, _ in group.members}
    planted = np.flatnonzero(original >= 0)
    found = sum(1 for j in planted if group_of.get(int(ids[j]), -1) == group_of.get(int(original[j]), -2))
    pairs = sum(len(g.members) - 1 for g in groups)
    return {"images": n, "index": vectors.kind, "index_seconds": round(index_seconds, 2),
            "graph_seconds": round(graph_seconds, 2), "group_seconds": round(group_seconds, 2),
            "total_seconds": round(index_seconds + graph_seconds + group_seconds, 2),
            "threshold": round(threshold, 4), "groups": len(groups), "planted": len(planted),
            "recall": round(found / max(len(planted), 1), 4), "precision": round(found / max(pairs, 1), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    set_threads(0)  # every core, as indexer build uses
    rows = [measure(n) for n in args.sizes]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "duplicates.json").write_text(json.dumps(rows, indent=2))
    lines = ["| Images | Index | Index s | Graph s | Groups s | Total s | Recall | Precision |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images']:,} | {r['index']} | {r['index_seconds']} | {r['graph_seconds']} | "
              f"{r['group_seconds']} | {r['total_seconds']} | {r['recall']} | {r['precision']} |" for r in rows]
    (args.out / "duplicates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
