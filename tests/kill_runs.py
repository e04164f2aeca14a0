"""Kill `indexer build` with SIGKILL at random moments, run it again, and check that nothing is lost or doubled.

    python -m tests.kill_runs --kills 200        # the long run (about 25 minutes on 2 cores)

Two scenarios, each with half the kills: first runs on a fresh collection (training included), and incremental
runs after images were added, changed and removed. Each kill falls at a random moment of what an unkilled run of
that kind takes. After every kill the collection must open (SQLite integrity, vectors loadable) and hold each
image at most once and nothing that is neither in the folder nor in what the last completed run left (a kill
before the run has committed its plan leaves that state whole, files deleted since included); then the same
command runs again to completion: it must encode only what was not finished (new or changed files), and
afterwards the collection must hold every image exactly once, each finding itself at rank 1.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_ARGS = ["--epochs", "2", "--image-size", "16", "--code-size", "8", "--variant", "conv"]  # crash safety is
# about the writes: the quickest encoder to train keeps the kills within the time limit on a slow machine
BATCH = "32"  # images per transaction: many commit points for the kills to fall between


@dataclass
class Tally:
    """What the kills did and what the checks found."""

    kills: int = 0
    runs_completed: int = 0
    lost: int = 0  # images in the folder missing after a completed run
    phantom: int = 0  # catalogued images in neither the folder nor the last completed run's catalogue
    duplicates: int = 0  # images catalogued twice (by path or id)
    not_self_first: int = 0  # images that do not find themselves at rank 1
    redone: int = 0  # images a resumed run encoded although they were already indexed
    unopenable: int = 0  # times the collection could not be opened after a kill
    notes: list[str] = field(default_factory=list)

    def failures(self) -> int:
        return self.lost + self.phantom + self.duplicates + self.not_self_first + self.redone + self.unopenable


def build_command(images: Path, index: Path) -> list[str]:
    return [sys.executable, "-m", "indexer", "build", str(images), "--index", str(index), "--quiet", "--batch",
            BATCH, "--workers", "2", *MODEL_ARGS]


def run_build(images: Path, index: Path, kill_after: float | None) -> dict | None:
    """Run a build; SIGKILL its process group after `kill_after` seconds. Returns the summary, or None if killed."""
    process = subprocess.Popen(build_command(images, index), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        out, err = process.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the build and its decode workers, with no chance to clean up
        process.communicate()
        return None
    if process.returncode:
        raise RuntimeError(f"build failed ({process.returncode}): {err[-2000:]}")
    return json.loads(out)


def inspect(images: Path, index: Path, tally: Tally, complete: bool, last_good: frozenset = frozenset()) -> set:
    """Check the collection after a kill (or a completed run); returns the paths it holds.

    After a kill, pass `last_good` (what the last completed run left): its paths may remain although their files
    were deleted since, as the killed run may not have reached its plan's commit.
    """
    from indexer.catalog import Catalog
    from indexer.collection import load_vectors

    files = {p.relative_to(images).as_posix() for p in images.rglob("*.png")}
    if not (index / "catalog.sqlite").exists():
        if complete:
            tally.unopenable += 1
        return set()
    try:
        with Catalog(index, readonly=True) as catalog:
            if catalog.conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise RuntimeError("SQLite integrity check failed")
            rows = catalog.conn.execute("SELECT id, relpath FROM images").fetchall()
            code_size = json.loads((index / "encoder.json").read_text())["code_size"] if rows else 8
            vectors = load_vectors(catalog, index, code_size, save=False) if rows else None
            ids, codes = catalog.all_codes(code_size)
    except Exception as exc:  # anything at all: the collection must always open
        tally.unopenable += 1
        tally.notes.append(f"could not open after kill {tally.kills}: {exc}")
        return set()
    paths = [r for _, r in rows]
    tally.duplicates += (len(paths) - len(set(paths))) + (len(rows) - len({i for i, _ in rows}))
    tally.phantom += len(set(paths) - files - last_good)
    if vectors is not None and len(vectors) != len(rows):
        tally.unopenable += 1
        tally.notes.append(f"vectors hold {len(vectors)} codes for {len(rows)} images")
    if complete:
        tally.lost += len(files - set(paths))
        if len(ids):
            distances, found = vectors.search(codes, 2)  # (n, 2) each
            own = found[:, 0] == ids
            # A tie at distance 0 with another image's identical code is still rank 1.
            tie = (found[:, 1] == ids) & (distances[:, 1] <= distances[:, 0] + 1e-6)
            tally.not_self_first += int((~(own | tie)).sum())
    return set(paths)


def pending(images: Path, index: Path) -> int:
    """Files the next run must encode: new, or changed since they were catalogued (by size and mtime)."""
    from indexer.catalog import Catalog

    known = {}
    if (index / "catalog.sqlite").exists():
        with Catalog(index, readonly=True) as catalog:
            known = catalog.fingerprints()
    todo = 0
    for path in images.rglob("*.png"):
        st = path.stat()
        todo += known.get(path.relative_to(images).as_posix()) != (st.st_size, st.st_mtime_ns)
    return todo


def cycle(images: Path, index: Path, kill_after: float, tally: Tally, last_good: frozenset) -> frozenset:
    """One killed run, the check, the run again to completion, the full check; returns what the collection holds."""
    if run_build(images, index, kill_after) is None:
        tally.kills += 1
    inspect(images, index, tally, complete=False, last_good=last_good)
    todo = pending(images, index)
    summary = run_build(images, index, kill_after=None)
    tally.runs_completed += 1
    tally.redone += max(0, summary["indexed"] - todo)  # finished work done again
    return frozenset(inspect(images, index, tally, complete=True))


def write_pngs(folder: Path, seeds: range) -> None:
    from tests.support import make_image

    for seed in seeds:
        target = folder / f"set{seed % 3}" / f"img_{seed:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        make_image(seed, 24).save(target)


def timed_build(images: Path, index: Path) -> float:
    started = time.monotonic()
    run_build(images, index, kill_after=None)
    return time.monotonic() - started


def kill_test(workdir: Path, kills: int, images: int = 600, seed: int = 0) -> Tally:
    """Both scenarios in `workdir` until `kills` kills have landed (half in each); returns the tally."""
    from tests.support import make_image

    rng = random.Random(seed)
    tally = Tally()
    folder, index = workdir / "images", workdir / "index"
    write_pngs(folder, range(images))
    # First runs: each kill on a fresh collection, at a random moment of what an unkilled first run takes.
    typical = timed_build(folder, index)
    while tally.kills < kills // 2:  # a run that beats its kill does not count: go on until enough landed
        shutil.rmtree(index)
        held = cycle(folder, index, rng.uniform(0.3, typical * 0.95), tally, frozenset())
    # Incremental runs: before each, images are added, changed and removed.
    next_seed = images
    typical = None
    while tally.kills < kills:
        write_pngs(folder, range(next_seed, next_seed + 60))
        next_seed += 60
        existing = sorted(folder.rglob("*.png"))
        for path in rng.sample(existing, 6):  # changed: new content under the same name
            make_image(rng.randrange(10**6), 24).save(path)
        for path in rng.sample(existing, 4):
            path.unlink(missing_ok=True)
        if typical is None:  # the time scale of an incremental run, measured on a copy
            scratch = workdir / "scratch-index"
            shutil.copytree(index, scratch)
            typical = timed_build(folder, scratch)
            shutil.rmtree(scratch)
        held = cycle(folder, index, rng.uniform(0.3, typical * 0.95), tally, held)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lookalike-kills-") as tmp:
        tally = kill_test(Path(tmp), args.kills, args.images, args.seed)
    print(json.dumps(tally.__dict__, indent=2))
    return 1 if tally.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
