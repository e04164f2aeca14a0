"""How many inverted lists at ten million codes: build time, recall and search latency of IVF-Flat per list count.

    python benchmarks/ivf_lists.py [--images 10000000] [--lists 8192 16384] [--out benchmarks/results]

Codes as benchmarks/speed.py makes its large collections (20,000 base codes on the unit sphere, the rest drawn
around them with gaussian noise), here with random base codes so that it needs no data. For each list count: k-means
on the sample indexer.vectors takes (TRAIN_PER_LIST codes a list), adding every code, recall@10 against exact
search on 1,000 of the codes at 1-8 probes (measured as the build measures it), and one-thread search latency of
300 fresh codes. Writes ivf_lists.json and ivf_lists.md. Takes about 6 minutes at 10M on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"


def main() -> int:
    import faiss

    from benchmarks.speed import synthetic_codes
    from indexer.vectors import TRAIN_PER_LIST, _exact_neighbours, ivf_lists, recall_at

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000_000)
    parser.add_argument("--lists", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20_000, 30)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    codes = synthetic_codes(base, args.images)  # (n, 30)
    queries = codes[rng.choice(len(codes), 1000, replace=False)]  # (1000, 30)
    fresh = synthetic_codes(base, len(base) + 300, seed=1)[-300:]  # (300, 30): codes the index does not hold
    started = time.perf_counter()
    kth = _exact_neighbours(codes, queries, 10)
    result = {"images": args.images, "default_lists": ivf_lists(args.images),
              "exact_1000_queries_seconds": round(time.perf_counter() - started, 1), "runs": []}
    for nlist in args.lists:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(30), 30, nlist)
        started = time.perf_counter()
        index.train(codes[rng.choice(len(codes), min(len(codes), nlist * TRAIN_PER_LIST), replace=False)])
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        index.add(codes)
        add_s = time.perf_counter() - started
        recall = {p: round(recall_at(index, queries, kth, 10, p), 4) for p in (1, 2, 4, 8)}
        faiss.omp_set_num_threads(1)  # as the server searches
        latency = {}
        for nprobe in (2, 8):
            index.nprobe = nprobe
            times = []
            for q in fresh:
                t = time.perf_counter()
                index.search(q[None], 10)
                times.append((time.perf_counter() - t) * 1000)
            latency[nprobe] = round(float(np.median(times)), 3)
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # back to every core for the next build
        run = {"lists": nlist, "train_seconds": round(train_s, 1), "add_seconds": round(add_s, 1),
               "recall_at_10_by_nprobe": recall, "search_p50_ms_by_nprobe": latency}
        print(run, file=sys.stderr, flush=True)
        result["runs"].append(run)
    lines = [f"{args.images:,} codes; exact search of 1,000 of them: {result['exact_1000_queries_seconds']} s; "
             f"lookalike's choice: {result['default_lists']:,} lists.", "",
             "| Lists | k-means s | Add s | Recall@10 at 1 / 2 / 4 / 8 probes | Search p50 ms at 2 / 8 probes |",
             "|---:|---:|---:|---|---|"]
    for r in result["runs"]:
        rec, lat = r["recall_at_10_by_nprobe"], r["search_p50_ms_by_nprobe"]
        lines.append(f"| {r['lists']:,} | {r['train_seconds']} | {r['add_seconds']} | "
                     f"{' / '.join(str(rec[p]) for p in (1, 2, 4, 8))} | {lat[2]} / {lat[8]} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ivf_lists.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "ivf_lists.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
