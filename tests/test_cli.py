"""The indexer CLI as a user runs it: `python -m indexer build|train|info|search`, through main(argv) (one case in a
subprocess, for the exit status and stderr as a shell sees them)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from encoder.embed import Encoder
from encoder.variants import DEFAULT_VARIANT
from tests.support import TINY, make_image, run_cli, write_images


def test_build_with_bad_files_exits_zero_and_reports_them(tiny_collection):
    # The session collection was built by the CLI with a corrupt JPEG, an empty PNG and a text file among 40 images.
    skipped = (tiny_collection.index_dir / "skipped.tsv").read_text().splitlines()
    assert skipped[0] == "path\treason"
    reasons = dict(line.split("\t", 1) for line in skipped[1:])
    assert set(reasons) == {"broken.jpg", "empty.png", "readme.txt"}
    assert reasons["empty.png"] == "empty file"
    assert all(reasons.values())


def test_unchanged_rerun_encodes_nothing(tiny_collection):
    proc = run_cli("indexer", "build", str(tiny_collection.images_dir), "--index", str(tiny_collection.index_dir),
                   "--quiet")
    summary = json.loads(proc.stdout)
    assert summary["indexed"] == 0 and summary["unchanged"] == 40 and summary["skipped"] == 3
    assert summary["trained"] is False and summary["images"] == 40
    assert "indexed 0, unchanged 40, removed 0, skipped 3" in proc.stderr
    assert summary["vectors"] == {"kind": "exact", "recall_at_10": 1.0}  # small: searched exactly
    assert "search index: exact; recall@10 against exact search 1.0" in proc.stderr
    assert "skipped broken.jpg:" in proc.stderr


def test_info_describes_collection_and_model(tiny_collection):
    info = json.loads(run_cli("indexer", "info", "--index", str(tiny_collection.index_dir)).stdout)
    assert info["images"] == 40
    assert info["model"].startswith("sha256:") and len(info["model"]) == 7 + 64
    assert info["encoder"] == {"variant": DEFAULT_VARIANT, "image_size": 16, "channels": 3, "code_size": 8}
    assert info["training"]["epochs_run"] >= 1 and "history" not in info["training"]
    assert info["skipped"] == 3
    assert info["vectors"]["kind"] == "exact" and info["vectors"]["images"] == 40
    assert info["vectors"]["recall_at_10"] == 1.0 and info["vectors"]["file_bytes"] > 40 * 8 * 4


def test_search_finds_the_query_itself_first(tiny_collection):
    query = tiny_collection.images[25]
    out = json.loads(run_cli("indexer", "search", "--index", str(tiny_collection.index_dir), str(query),
                             "-k", "5").stdout)
    results = out["results"]
    assert len(results) == 5
    assert results[0]["path"] == query.relative_to(tiny_collection.images_dir).as_posix()
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances) and distances[0] < distances[1]


@pytest.mark.slow
def test_build_train_and_retrain_on_a_fresh_folder(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 12)
    proc = run_cli("indexer", "train", str(images), "--index", str(index), *TINY)
    assert "trained sha256:" in proc.stderr and (index / "encoder.keras").is_file()
    assert (index / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sidecar = json.loads((index / "encoder.json").read_text())
    assert sidecar["code_size"] == 8 and sidecar["training"]["images"] + sidecar["training"]["held_out"] == 12
    first = json.loads(run_cli("indexer", "build", str(images), "--index", str(index), "--quiet").stdout)
    assert first["indexed"] == 12 and first["trained"] is False  # the model trained above is reused
    retrained = json.loads(run_cli("indexer", "build", str(images), "--index", str(index), "--retrain",
                                   "--quiet", *TINY).stdout)
    assert retrained["trained"] is True and retrained["indexed"] == 12
    assert retrained["model"] != first["model"]


def test_fatal_errors_exit_nonzero_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    cases = {
        "no images": ("indexer", "build", str(empty), "--index", str(tmp_path / "i1"), *TINY),
        "missing folder": ("indexer", "build", str(tmp_path / "nope"), "--index", str(tmp_path / "i2"), *TINY),
        "no collection": ("indexer", "info", "--index", str(tmp_path / "nothing")),
        "search without model": ("indexer", "search", "--index", str(tmp_path / "nothing"), str(empty / "x.jpg")),
    }
    for name, args in cases.items():
        # One case in a fresh interpreter: the exit status and stderr as the shell sees them, TensorFlow loaded.
        proc = run_cli(*args, check=False, subprocess_run=name == "no images")
        assert proc.returncode != 0, name
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: "), (name, proc.stderr)
        assert "Traceback" not in proc.stderr, name


def test_unwritable_index_folder_is_a_clear_error(tmp_path):
    images = tmp_path / "images"
    write_images(images, 10)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the index folder should go")
    proc = run_cli("indexer", "build", str(images), "--index", str(blocker), *TINY, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_bad_query_image_is_a_clear_error(tiny_collection, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(np.random.default_rng(3).bytes(300))
    proc = run_cli("indexer", "search", "--index", str(tiny_collection.index_dir), str(bad), check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_changed_and_deleted_files_through_the_cli(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    paths = write_images(images, 12)
    run_cli("indexer", "build", str(images), "--index", str(index), "--quiet", *TINY)
    paths[0].unlink()
    make_image(500).save(paths[1])
    os.utime(paths[1], ns=(0, 10**18))  # a different mtime even on coarse file systems
    write_images(images, 2, start=200, sub="new")
    summary = json.loads(run_cli("indexer", "build", str(images), "--index", str(index), "--quiet").stdout)
    assert (summary["indexed"], summary["unchanged"], summary["removed"], summary["images"]) == (3, 10, 1, 13)


@pytest.mark.slow
def test_relative_paths_work_from_any_folder(tiny_collection, tmp_path, monkeypatch):
    # Users type `--index demo-index`; every command must accept paths relative to where they run it.
    import shutil

    work = tmp_path / "work"
    shutil.copytree(tiny_collection.images_dir, work / "photos")
    monkeypatch.chdir(work)
    run_cli("indexer", "build", "photos", "--index", "idx", "--quiet", *TINY)
    assert json.loads(run_cli("indexer", "info", "--index", "idx").stdout)["images"] == 40
    found = run_cli("indexer", "search", "--index", "idx", "photos/pngs/img_0105.png", "-k", "1")
    assert json.loads(found.stdout)["results"][0]["path"] == "pngs/img_0105.png"


@pytest.mark.slow
def test_variant_is_chosen_at_training_and_shown_by_info(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 12)
    run_cli("indexer", "build", str(images), "--index", str(index), "--variant", "variational", "--quiet", *TINY)
    info = json.loads(run_cli("indexer", "info", "--index", str(index)).stdout)
    assert info["encoder"]["variant"] == "variational"
    assert info["training"]["config"]["variant"] == "variational" and info["training"]["seconds"] > 0
    assert {"epochs_run", "final_loss", "final_val_loss"} <= set(info["training"])
    other = run_cli("indexer", "build", str(images), "--index", str(index), "--variant", "dense", check=False)
    assert other.returncode == 2 and "--retrain" in other.stderr.strip().splitlines()[-1]
    bad = run_cli("indexer", "build", str(images), "--index", str(index), "--occlusion", "2", check=False)
    assert bad.returncode == 2 and "--occlusion: expected a number from 0 to 1" in bad.stderr


def test_corruption_levels_reach_the_recorded_training_config(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 12)
    run_cli("indexer", "train", str(images), "--index", str(index), "--variant", "denoising", "--noise-std", "0.05",
            "--occlusion", "0", "--zoom", "0.1", "--brightness", "0.15", "--whitening", "0", "--quiet", *TINY)
    config = json.loads(run_cli("indexer", "info", "--index", str(index)).stdout)["training"]["config"]
    assert (config["noise_std"], config["occlusion"], config["zoom"], config["brightness"]) == (0.05, 0.0, 0.1, 0.15)
    assert config["whitening"] == 0.0  # and the model's code basis stayed the identity: codes only centred
    basis = np.asarray(Encoder.load(index).model.code_basis)
    np.testing.assert_array_equal(basis, np.eye(len(basis)))
