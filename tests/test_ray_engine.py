"""The Ray engine makes the collection the local engine makes: first run, incremental run, a two-node cluster, and
a driver killed mid-run. Ray runs for real, on this machine (a local instance of 2 CPUs, and two nodes through Ray's
own cluster utilities)."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.build import BuildError, BuildOptions, build
from indexer.catalog import Catalog
from indexer.ray_engine import ray_available
from tests.support import REPO, make_image, run_cli, write_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ray_available(), reason="the optional Ray extra is not installed: pip install '.[ray]' "
                                                   "(or -r requirements-ray.txt); .ci/run installs it"),
]

MODEL = dict(image_size=16, code_size=8, epochs=2)
IMAGES = 160


def bad_files(folder: Path) -> None:
    """Files a build must skip with a reason: empty, not an image, a truncated JPEG."""
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_bytes(b"these are not pixels")
    whole = folder / "img_0000.jpg"
    (folder / "sub" / "truncated.jpg").write_bytes(whole.read_bytes()[:300])


def snapshot(index: Path) -> dict:
    """Everything the two engines must agree on: ids, paths, facts, codes, the error sample, skips and the report."""
    with Catalog(index, readonly=True) as catalog:
        rows = catalog.conn.execute("SELECT id, relpath, size, mtime_ns, sha256, width, height, recon_error IS NULL "
                                    "FROM images ORDER BY id").fetchall()
        ids, codes = catalog.all_codes(MODEL["code_size"])
        skipped = sorted(catalog.conn.execute("SELECT relpath, size, mtime_ns, reason FROM skipped").fetchall())
    return {"rows": rows, "codes": dict(zip(ids.tolist(), codes)), "skipped": skipped,
            "report": (index / "skipped.tsv").read_text()}


def assert_same_collection(ray_index: Path, local_index: Path) -> None:
    ray, local = snapshot(ray_index), snapshot(local_index)
    assert ray["rows"] == local["rows"]  # the same ids for the same paths, hashes, sizes and error sample
    assert ray["skipped"] == local["skipped"]
    assert ray["report"] == local["report"]
    assert ray["codes"].keys() == local["codes"].keys()
    for image_id, code in local["codes"].items():
        np.testing.assert_allclose(ray["codes"][image_id], code, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of images and bad files, and a collection folder holding a tiny encoder trained on it, no codes yet.

    Both engines start from a copy of it: training stays on the driver whatever the engine, so one model serves both
    and their codes can be compared."""
    root = tmp_path_factory.mktemp("ray")
    images, index = root / "images", root / "trained"
    write_images(images, IMAGES // 2)
    write_images(images, IMAGES // 2, start=IMAGES // 2, ext=".png", sub="sub")
    bad_files(images)
    build(images, index, BuildOptions(**MODEL, workers=1, progress=False), train_only=True)
    return images, index


def fresh_copy(trained_index: Path, target: Path) -> Path:
    shutil.copytree(trained_index, target)
    return target


def test_ray_makes_the_local_collection_first_run_and_incremental(trained, tmp_path):
    images, trained_index = trained
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    local, ray = fresh_copy(trained_index, tmp_path / "local"), fresh_copy(trained_index, tmp_path / "ray")
    build(folder, local, BuildOptions(workers=2, progress=False, commit_every=32))
    # The CLI as a user runs it; without --ray-address it starts (and stops) a local Ray instance.
    out = run_cli("indexer", "build", str(folder), "--index", str(ray), "--engine", "ray", "--batch", "32", "-q")
    assert f'"indexed": {IMAGES}' in out.stdout and '"skipped": 3' in out.stdout
    assert_same_collection(ray, local)

    # Incremental: files added, changed and removed, and a new bad file.
    write_images(folder, 20, start=1000, sub="added")
    for path in sorted(folder.glob("img_001*.jpg"))[:5]:
        make_image(5000 + int(path.stem[-4:])).save(path)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, whatever the clock's grain
    for path in sorted((folder / "sub").glob("img_*.png"))[:5]:
        path.unlink()
    (folder / "added" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not much of a JPEG")
    local_run = build(folder, local, BuildOptions(workers=2, progress=False, commit_every=32))
    ray_run = build(folder, ray, BuildOptions(engine="ray", progress=False, commit_every=32))
    assert (ray_run.indexed, ray_run.removed, len(ray_run.skipped)) == (local_run.indexed, local_run.removed,
                                                                        len(local_run.skipped)) == (25, 5, 4)
    assert_same_collection(ray, local)

    # A local build that trains first reuses its training sample's decodes: the ids still follow the paths.
    trained_here = tmp_path / "trained-here"
    build(folder, trained_here, BuildOptions(**MODEL, workers=2, max_train_images=60, progress=False))
    rows = snapshot(trained_here)["rows"]
    assert len(rows) == len(snapshot(local)["rows"])
    assert [(r[0], r[1]) for r in rows] == list(enumerate(sorted(r[1] for r in rows), start=1))

    # An impossible pool is a clear error, and loses nothing.
    write_images(folder, 1, start=3000, sub="added")
    with pytest.raises(BuildError, match="leave none of the cluster's .* CPUs for decoding"):
        build(folder, ray, BuildOptions(engine="ray", ray_encoders=64, progress=False))
    assert snapshot(ray)["rows"] == snapshot(local)["rows"]


def test_a_two_node_cluster_makes_the_local_collection(trained, tmp_path):
    from ray.cluster_utils import Cluster

    images, trained_index = trained
    local, ray = fresh_copy(trained_index, tmp_path / "local"), fresh_copy(trained_index, tmp_path / "ray")
    build(images, local, BuildOptions(workers=2, progress=False, commit_every=32))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        run = build(images, ray, BuildOptions(engine="ray", ray_address=cluster.address, ray_encoders=2,
                                              progress=False, commit_every=32))
    finally:
        cluster.shutdown()
    assert run.indexed == IMAGES
    assert_same_collection(ray, local)


def committed_images(index: Path) -> int:
    try:
        with sqlite3.connect(f"{(index / 'catalog.sqlite').as_uri()}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.Error:  # not created yet, or busy
        return 0


def test_a_killed_driver_loses_nothing_and_the_rerun_completes_the_collection(trained, tmp_path):
    images, trained_index = trained
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    write_images(folder, 1000, start=2000, sub="more")
    total = IMAGES + 1000
    local, ray = fresh_copy(trained_index, tmp_path / "local"), fresh_copy(trained_index, tmp_path / "ray")
    build(folder, local, BuildOptions(workers=2, progress=False, commit_every=16))
    # Transactions of 2 images: about 580 commits, each with its own fsync, spread the run's commits over more than
    # the poll's interval, so the kill falls between them (the ids do not depend on the transaction size).
    command = [sys.executable, "-m", "indexer", "build", str(folder), "--index", str(ray), "--engine", "ray",
               "--batch", "2", "-q"]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while committed_images(ray) == 0 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert driver.poll() is None, f"the build ended before it could be killed: {driver.stderr.read()[-2000:]}"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and whatever it started, with no chance to clean up
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.stderr.close()
    kept = committed_images(ray)
    assert 0 < kept < total  # killed mid-run, with whole batches committed
    with Catalog(ray, readonly=True) as catalog:  # what was committed is whole: plan order, no gaps
        assert catalog.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rerun = build(folder, ray, BuildOptions(engine="ray", progress=False, commit_every=16))
    assert rerun.unchanged == kept and rerun.indexed == total - kept  # only what the kill lost is encoded again
    assert_same_collection(ray, local)  # nothing lost, phantom or duplicated: the uninterrupted local build's ids


def test_a_running_server_follows_a_ray_build(trained, tmp_path):
    import requests

    from indexer.vectors import saved_generation
    from tests.support import Searcher, start_server, stop_server, wait_for

    images, trained_index = trained
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    index = fresh_copy(trained_index, tmp_path / "index")
    build(folder, index, BuildOptions(workers=2, progress=False))
    server = start_server(index, folder, [], extra_env={"LOOKALIKE_FOLLOW_SECONDS": "0.2"})
    try:
        first = requests.get(f"{server.url}/api/info", timeout=10).json()
        added = write_images(folder, 1000, start=7000, sub="by-ray")
        payloads = [p.read_bytes() for p in sorted(folder.glob("img_00*.jpg"))[:6]]
        with Searcher(server.url, payloads, list(range(1, 41))) as searcher:
            run = build(folder, index, BuildOptions(engine="ray", progress=False))
            assert run.indexed == 1000
            wait_for(lambda: requests.get(f"{server.url}/api/info", timeout=10).json()["generation"]
                     == saved_generation(index))
        assert searcher.problems == [] and searcher.tally["ok"] > 10
        assert requests.get(f"{server.url}/api/info", timeout=10).json()["images"] == first["images"] + 1000
        hits = requests.post(f"{server.url}/api/search?k=1", files={"image": ("q.png", added[500].read_bytes())},
                             timeout=30).json()["results"]
        assert hits[0]["path"] == f"by-ray/{added[500].name}"
    finally:
        stop_server(server)
