"""Model integrity: a tampered or swapped encoder is refused, with a clear message, before Keras loads it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from encoder import store
from tests.support import TINY, run_cli, write_images

pytestmark = pytest.mark.slow  # every test here trains, kills or serves: `make test-fast` leaves them out

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def copy(tmp_path, tiny_collection):
    images, index = tmp_path / "images", tmp_path / "index"
    shutil.copytree(tiny_collection.images_dir, images)
    shutil.copytree(tiny_collection.index_dir, index)
    return images, index


def serve(index: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search_api", "--index", str(index), "--port", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_a_tampered_model_is_refused_by_the_server_and_the_indexer(copy):
    images, index = copy
    model = index / "encoder.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    model.write_bytes(bytes(data))
    refused = serve(index)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert "sha256" in last and "encoder.keras" in last, refused.stderr[-1000:]
    write_images(images, 1, start=500)  # something to encode, so the build must load the model
    build = run_cli("indexer", "build", str(images), "--index", str(index), *TINY, check=False)
    assert build.returncode == 2 and "sha256" in build.stderr


def test_a_consistently_swapped_model_is_refused_by_the_catalogue_stamp(copy, tmp_path):
    images, index = copy
    other = tmp_path / "other"
    run_cli("indexer", "train", str(images), "--index", str(other), "--epochs", "1", "--image-size", "16",
            "--code-size", "8")
    store.copy_model(other, index)  # model, sidecar and graphs agree with each other, not with the codes
    refused = serve(index)
    assert refused.returncode != 0 and "were made by model" in refused.stderr
