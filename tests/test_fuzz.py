"""A bounded atheris run over the decode -> preprocess path (the long one is documented in tests/fuzz_decode.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here trains, kills or serves: `make test-fast` leaves them out

REPO = Path(__file__).resolve().parents[1]
RUNS = 8000  # a bounded smoke run in `make test`; tests/fuzz_decode.py documents the long one


def test_fuzzing_the_decoder_finds_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.fuzz_decode", f"-runs={RUNS}", "-seed=1",
                           f"-artifact_prefix={tmp_path}/"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {RUNS} runs" in done.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
