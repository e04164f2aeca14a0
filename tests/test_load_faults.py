"""benchmarks/load_faults.py, short: searches, hostile uploads and writes at once, then a restart; nothing fails."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains, kills or serves: `make test-fast` leaves them out

REPO = Path(__file__).resolve().parents[1]


def test_load_with_writes_and_hostile_uploads_loses_nothing(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load_faults.py"), "--seconds", "8",
                           "--photos", "120", "--threads", "4", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    r = json.loads((tmp_path / "load_faults.json").read_text())
    assert r["searches"] > 100 and r["hostile"] > 5 and r["writes"] > 10 and r["deletes"] > 0
    assert (r["server_errors"], r["other_errors"], r["hostile_not_4xx"]) == (0, 0, 0), r["problems"]
    assert (r["lost_writes"], r["resurrected_deletes"]) == (0, 0)
    assert r["kept_after_restart"] == r["writes"] - r["deletes"]
    assert r["max_queued_requests"] is not None  # the queue gauge is served through waitress
    assert r["server_log_warnings"] == 0, r["server_log_sample"]  # no line per queued request
