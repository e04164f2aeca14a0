"""A bounded atheris run over the decode -> preprocess path (the long one is documented in tests/fuzz_decode.py)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_fuzzing_the_decoder_finds_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.fuzz_decode", "-runs=20000", "-seed=1",
                           f"-artifact_prefix={tmp_path}/"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 20000 runs" in done.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
