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
    floor = r["floor"]  # issue 17: the query's floor and the ratios to it, measured in the same run
    assert floor["runtime"] == "onnx" and floor["images"] > 0
    assert floor["floor_ms"] == pytest.approx(sum(floor["parts_ms"].values()), abs=1e-3)
    assert all(v > 0 for v in floor["parts_ms"].values()) and floor["floor_rate_per_s"] > 0
    assert floor["check_batch_extra_ms"] > 0  # the decoder's pass costs something
    at_load = r["collections"][-1]
    assert at_load["http_no_check_ms"]["p50"] > 0 and at_load["health_ms"]["p50"] > 0
    measured = r["targets_measured"]
    assert measured["p50_over_floor"] == pytest.approx(at_load["http_ms"]["p50"] / floor["floor_ms"], rel=0.01)
    assert measured["qps_over_floor_rate"] > 0 and measured["check_over_no_check"] > 0
    assert r["machine"]["runtime"] == "onnx" and isinstance(r["machine"]["cpu_features"], list)
    report = (tmp_path / "speed.md").read_text()
    assert "| Target | Goal | Measured | Met |" in report and "| cifar10 | 1,200 |" in report
    assert "| **the floor** |" in report and "encoder on onnx" in report
    assert (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_benchmark_skips_cleanly_without_data(tmp_path):
    out = tmp_path / "out"
    done = run("--data", str(tmp_path / "nowhere"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" in done.stdout and not out.exists()


def test_the_runtimes_benchmark_compares_runtimes_on_a_collections_model(tiny_collection, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "runtimes.py"), "--index",
                           str(tiny_collection.index_dir), "--candidates", "tensorflow", "onnx", "--threads", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "runtimes.json").read_text())["rows"]
    assert [(r["candidate"], r["threads"]) for r in rows] == [("tensorflow", 1), ("onnx", 1)]
    for r in rows:
        assert r["max_code_difference"] < 1e-4  # every runtime gives the Keras model's codes
        # Measured, not compared: which is faster depends on the machine (benchmarks say; tests do not time).
        assert all(r[key] > 0 for key in ("codes_one_ms", "codes_batch_ms", "query_one_ms", "query_batch_ms"))
    assert "| onnx | 1 |" in (tmp_path / "runtimes.md").read_text()
