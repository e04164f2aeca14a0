"""`python -m indexer evaluate` on a tiny real collection whose two sub-folders are its labels."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import TINY, make_image, run_cli


def write_tinted(folder: Path, count: int, start: int, tint: tuple[int, int, int]) -> None:
    """Distinct synthetic pictures washed strongly towards one colour, so the two folders really differ."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(start, start + count):
        pixels = np.asarray(make_image(seed), dtype=np.float32)  # (48, 48, 3)
        washed = 0.35 * pixels + 0.65 * np.array(tint, dtype=np.float32)
        Image.fromarray(washed.astype(np.uint8)).save(folder / f"img_{seed:04d}.jpg")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path]:
    """12 red-washed and 12 blue-washed images in two sub-folders, 3 loose ones at the top level, indexed by the CLI."""
    root = tmp_path_factory.mktemp("labelled")
    images, index = root / "images", root / "index"
    write_tinted(images / "red", 12, 0, (230, 30, 30))
    write_tinted(images / "blue", 12, 100, (30, 30, 230))
    for seed in (200, 201, 202):
        make_image(seed).save(images / f"loose_{seed}.jpg")
    run_cli("indexer", "build", str(images), "--index", str(index), "--quiet", *TINY)
    return images, index


def test_evaluate_reports_precision_and_map_over_labelled_images(labelled):
    _, index = labelled
    proc = run_cli("indexer", "evaluate", "--index", str(index))
    report = json.loads(proc.stdout)
    assert {"precision_at_k", "k", "map_at_k", "map_k", "metric", "images", "images_scored", "unlabelled",
            "labels", "per_label", "model"} <= set(report)
    assert report["images"] == 27 and report["images_scored"] == 24 and report["unlabelled"] == 3
    assert report["labels"] == 2 and set(report["per_label"]) == {"red", "blue"}
    assert report["per_label"]["red"]["images"] == 12
    assert report["k"] == 10 and report["map_k"] == 23  # 100 capped at the 23 other labelled images
    assert report["metric"] == "l2"
    for value in [report["precision_at_k"], report["map_at_k"]] + [
            v[m] for v in report["per_label"].values() for m in ("precision_at_k", "map_at_k")]:
        assert 0.0 <= value <= 1.0
    assert report["precision_at_k"] >= 0.8  # red and blue washes are far apart even for a 3-epoch model
    assert "precision@10" in proc.stderr and "3 top-level images without a label left out" in proc.stderr


def test_evaluate_options_k_and_cosine(labelled):
    _, index = labelled
    report = json.loads(run_cli("indexer", "evaluate", "--index", str(index), "-k", "5", "--metric", "cosine",
                                "-q").stdout)
    assert report["k"] == 5 and report["metric"] == "cosine"
    assert 0.0 <= report["precision_at_k"] <= 1.0
    huge = json.loads(run_cli("indexer", "evaluate", "--index", str(index), "-k", "500").stdout)
    assert huge["k"] == 23  # capped at the candidates there are


def test_evaluate_needs_two_labels(labelled, tmp_path):
    images, index = labelled
    one_label, one_index = tmp_path / "images", tmp_path / "index"
    shutil.copytree(images, one_label)
    shutil.copytree(index, one_index)
    shutil.rmtree(one_label / "blue")
    run_cli("indexer", "build", str(one_label), "--index", str(one_index), "--quiet")  # drops the blue images
    proc = run_cli("indexer", "evaluate", "--index", str(one_index), check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "at least 2 sub-folders" in lines[0]


def test_evaluate_without_a_collection_is_a_one_line_error(tmp_path):
    proc = run_cli("indexer", "evaluate", "--index", str(tmp_path / "nothing"), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
