"""The collection map at scale: projecting the codes, and drawing 100,000 points in the page.

    python benchmarks/map.py                              # PCA at 10,000 / 100,000 / 1,000,000 codes, UMAP at 10,000
    python benchmarks/map.py --umap-sizes 10000 100000    # UMAP further (minutes on 2 cores)

Projection: `indexer.projection.project` on synthetic 30-number codes drawn like a collection's (clusters of
look-alikes), timed per size; UMAP only with the optional extra installed. Drawing: the real server over a tiny
collection, its map answer replaced by 100,000 points (the page fetches the same arrays from a real collection),
in headless Chromium (Debian's, as the browser tests drive it); the page records each frame's draw time on the
canvas (`data-draw-ms`), read after every zoom and pan step. Writes results/map.json and results/map.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
D = 30
POINTS = 100_000
STEPS = 30  # zoom and pan steps whose frames are timed


def synthetic_codes(n: int, seed: int = 0) -> np.ndarray:
    """(n, D) float32 codes in a few hundred clusters, as benchmarks/duplicates.py draws them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 200), D)).astype(np.float32) * 2.0
    return centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, D)).astype(np.float32) * 0.6


def projection_seconds(n: int, method: str) -> float:
    """Seconds to project `n` synthetic codes to 2-D with `method`."""
    from indexer.projection import project

    codes = synthetic_codes(n)
    started = time.perf_counter()
    project(codes, method)
    return time.perf_counter() - started


def frame_times(points: int = POINTS) -> list[float]:
    """Milliseconds each frame of the map took to draw with `points` points, over STEPS zoom and pan steps."""
    from playwright.sync_api import sync_playwright

    from benchmarks.harness import make_image, start_server, stop_server
    from indexer.__main__ import main as indexer

    rng = np.random.default_rng(0)
    body = {"method": "pca", "generation": 1, "images": points, "ids": list(range(1, points + 1)),
            "x": np.round(rng.random(points), 5).tolist(), "y": np.round(rng.random(points), 5).tolist(),
            "group": rng.integers(0, 30, points).tolist(), "groups": [f"folder{i}" for i in range(30)]}
    with tempfile.TemporaryDirectory() as work:
        images, index = Path(work) / "images", Path(work) / "index"
        images.mkdir()
        for seed in range(20):
            make_image(seed).save(images / f"{seed:02d}.jpg")
        if indexer(["build", str(images), "--index", str(index), "-q", "--epochs", "3", "--image-size", "16",
                    "--code-size", "8"]) != 0:
            raise RuntimeError("could not build the tiny collection")
        server = start_server(index, images, sorted(images.iterdir()))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.route("**/api/map*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                      body=json.dumps(body)))
                page.goto(f"{server.url}/#view=map")
                page.wait_for_selector("#map-view[data-ready=true]", timeout=120_000)
                times = page.evaluate("""(steps) => new Promise(async (done) => {
                    const c = document.getElementById('map-canvas');
                    const r = c.getBoundingClientRect();
                    const frame = () => new Promise((next) => requestAnimationFrame(() => requestAnimationFrame(next)));
                    const times = [];
                    for (let i = 0; i < steps; i++) {
                        if (i % 3 === 2) {  // a pan step: an arrow key
                            c.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true}));
                        } else {  // a zoom step, in and then out
                            c.dispatchEvent(new WheelEvent('wheel', {deltaY: i < steps / 2 ? -100 : 100,
                                clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true}));
                        }
                        await frame();
                        times.push(Number(c.dataset.drawMs));
                    }
                    done(times);
                })""", STEPS)
                browser.close()
        finally:
            stop_server(server)
    return [float(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--umap-sizes", type=int, nargs="*", default=[10_000])
    args = parser.parse_args(argv)
    from indexer.projection import umap_available

    rows = [{"images": n, "method": "pca", "seconds": round(projection_seconds(n, "pca"), 2)} for n in args.sizes]
    if umap_available():
        rows += [{"images": n, "method": "umap", "seconds": round(projection_seconds(n, "umap"), 1)}
                 for n in args.umap_sizes]
    else:
        print("UMAP skipped: umap-learn (the optional map extra) is not installed", file=sys.stderr)
    frames = frame_times()
    summary = {"points": POINTS, "frames": len(frames), "median_ms": round(float(np.median(frames)), 1),
               "p95_ms": round(float(np.percentile(frames, 95)), 1), "max_ms": round(max(frames), 1)}
    lines = ["| Images | Projection | Seconds |", "|---:|---|---:|"]
    lines += [f"| {r['images']:,} | {r['method'].upper()} | {r['seconds']} |" for r in rows]
    lines += ["", f"Drawing {POINTS:,} points in headless Chromium (software rendering, no GPU): a frame's draw "
                  f"takes {summary['median_ms']} ms at the median, {summary['p95_ms']} ms at the 95th percentile and "
                  f"{summary['max_ms']} ms at most, over {summary['frames']} zoom and pan steps."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "map.json").write_text(json.dumps({"projection": rows, "frames_ms": frames, "drawing": summary},
                                                 indent=2))
    (RESULTS / "map.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
