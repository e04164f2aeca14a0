"""benchmarks/speed.py end to end in --quick mode on real data, and its clean skip when the data is absent."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains, kills or serves: `make test-fast` leaves them out

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "speed.py"
SHARED = REPO.parent / "shared" / "data"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(not (SHARED / "cifar10").is_dir(), reason="../shared/data/cifar10 is absent")
def test_speed_benchmark_measures_everything_beside_its_baselines(tmp_path):
    done = run("--quick", "--limit", "1200", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((tmp_path / "speed.json").read_text())
    cifar = r["indexing"]["cifar10"]
    assert cifar["files"] == 1200 and cifar["decode_per_s"] > 0 and cifar["naive_per_s"] > 0
    assert cifar["pipeline_per_s"] > cifar["naive_per_s"]  # batched encoding beats predict() per image
    assert set(cifar["timings"]) >= {"scan", "load_model", "index", "vectors"}
    if (SHARED / "caltech101").is_dir():
        assert r["indexing"]["photos"]["files"] == 60
    assert [c["images"] for c in r["collections"]] == [2_000, 5_000]
    for c in r["collections"]:
        assert c["index_kind"] == "exact" and c["recall_at_10"] == 1.0
        assert 0 < c["http_ms"]["p50"] <= c["http_ms"]["p99"] and c["startup_seconds"] > 0
        assert 120 <= c["vector_bytes_per_image"] < 200  # 30 float32 + an id, plus the file's small header
    load = r["load"]
    assert load["images"] == 5_000 and load["lookalike"]["requests"] > 0 and load["lookalike"]["errors"] == 0
    assert load["naive"]["requests"] > 0 and load["qps_over_naive"] > 1
    assert load["metrics_lines"] > 10  # /metrics answered under the same server
    report = (tmp_path / "speed.md").read_text()
    assert "| Target | Goal | Measured | Met |" in report and "| cifar10 | 1,200 |" in report
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_benchmark_skips_cleanly_without_data(tmp_path):
    out = tmp_path / "out"
    done = run("--data", str(tmp_path / "nowhere"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" in done.stdout and not out.exists()
