"""benchmarks/ray_engine.py end to end in --quick mode on real photos, and its clean skip when the data is absent."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.ray_engine import ray_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ray_available(), reason="the optional Ray extra is not installed")]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "ray_engine.py"
SHARED = REPO.parent / "shared" / "data"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(not (SHARED / "caltech101").is_dir(), reason="../shared/data/caltech101 is absent")
def test_ray_benchmark_compares_every_engine_with_the_local_one(tmp_path):
    done = run("--quick", "--steps", "20", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((tmp_path / "ray_engine.json").read_text())
    assert [e["engine"] for e in r["runs"]] == ["local", "ray, local instance", "ray, 2 nodes x 1 CPU"]
    assert all(e["images"] == r["images"] == 300 and e["index_rate"] > 0 for e in r["runs"])
    table = (tmp_path / "ray_engine.md").read_text()
    assert "| ray, 2 nodes x 1 CPU | 2 x 1 | 1 |" in table and "vs local" in table


def test_ray_benchmark_skips_cleanly_without_the_data(tmp_path):
    done = run("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0 and done.stdout.startswith("skipped:") and not (tmp_path / "out").exists()
