"""benchmarks/quality.py end to end on a small slice of real data, and its clean skip when the data is absent."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains, kills or serves: `make test-fast` leaves them out

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "quality.py"
SHARED = REPO.parent / "shared" / "data"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/data/mnist is absent")
def test_quality_benchmark_measures_every_method_and_writes_its_reports(tmp_path):
    done = run("--datasets", "mnist", "--variants", "invariant", "--steps", "20", "--limit", "300",
               "--whitening", "0.5", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "quality.json").read_text())
    methods = results["datasets"]["mnist"]["methods"]
    assert list(methods) == ["raw pixels", "PCA-30", "pHash", "dHash", "invariant", "invariant, whitened^0.5"]
    for name, m in methods.items():
        p10 = m["retrieval"]["l2"]["precision_at_10"]
        assert 0.3 < p10 <= 1.0, (name, p10)  # 10 classes: chance is 0.1, and 300 digits are enough to beat it
        assert set(m["robustness"]["l2"]) == {"noise", "occlusion", "jpeg30", "crop90", "brightness", "mean"}
        assert m["robustness"]["l2"]["jpeg30"] > 0.5  # a mild corruption still finds its original
    trained = methods["invariant"]["training"]
    assert trained["steps_run"] == 20 and trained["images_per_second"] > 0
    assert methods["invariant"]["reconstruction_sse"] > 0
    # the service's ranking (codes, then the copy check) is measured beside the codes alone
    checked = methods["invariant"]["robustness"]["checked"]
    assert set(checked) == {"noise", "occlusion", "jpeg30", "crop90", "brightness", "mean"} and checked["mean"] > 0.5
    assert methods["PCA-30"]["reconstruction_sse"] < methods["raw pixels"].get("reconstruction_sse", float("inf"))
    report = (tmp_path / "quality.md").read_text()
    assert "subsampled to at most 300 images" in report and "invariant" in report and "dHash" in report
    assert (tmp_path / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rendered = tmp_path / "rendered"
    again = run("--render", str(tmp_path / "quality.json"), "--out", str(rendered))
    assert again.returncode == 0 and (rendered / "quality.md").read_text() == report


def test_quality_benchmark_skips_cleanly_without_data(tmp_path):
    out = tmp_path / "out"
    # the demo folder is in the repo, so only the ../shared sets can be absent
    done = run("--data", str(tmp_path / "nowhere"), "--datasets", "fashion-mnist", "mnist", "cifar10",
               "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped" in done.stderr + done.stdout and "nothing written" in done.stdout
    assert not out.exists()
