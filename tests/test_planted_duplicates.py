"""Acceptance: edited copies planted among real photos, many with look-alikes of their own, are grouped with their
originals at the suggested threshold, and few groups are false."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from benchmarks.planted import DEMO, DEMO_OWN_DUPLICATES, PLANTED_DIR, photos_in, plant_copies, score_groups
from tests.support import run_cli

pytestmark = pytest.mark.slow  # trains a model on 1,260 photos


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The demo photos plus edited copies of 5% of them, indexed with a short training."""
    root = tmp_path_factory.mktemp("planted")
    copies = plant_copies(DEMO, root / "images", share=0.05, seed=0)
    run_cli("indexer", "build", str(root / "images"), "--index", str(root / "index"), "--steps", "400", "-q",
            timeout=900)
    return root, copies


def test_the_planted_copies_carry_every_kind_of_edit(planted):
    root, copies = planted
    assert len(copies) == round(0.05 * len(photos_in(DEMO))) == 60
    kinds = Counter(edit.split()[0] for copy in copies for edit in copy.edits)
    assert kinds["jpeg"] == 60 and min(kinds[k] for k in ("resize", "crop", "brightness", "watermark")) >= 15
    assert all(c.copy.startswith(f"{PLANTED_DIR}/") and (root / "images" / c.original).exists() for c in copies)
    resized = next(c for c in copies if any(e.startswith("resize") for e in c.edits))
    with Image.open(root / "images" / resized.copy) as copy, Image.open(DEMO / resized.original) as original:
        assert copy.format == "JPEG" and copy.size != original.size


def test_the_suggested_threshold_finds_planted_copies_with_few_false_groups(planted):
    root, copies = planted
    report = json.loads(run_cli("indexer", "duplicates", "--index", str(root / "index"), "--json").stdout)
    groups = [[m["path"] for m in g["members"]] for g in report["groups"]]
    score = score_groups(groups, copies, DEMO_OWN_DUPLICATES)
    summary = {k: score[k] for k in ("found", "planted", "groups", "false_groups", "false")}
    assert score["recall"] >= 0.95, summary
    assert score["false_share"] <= 0.05, summary
    assert report["check"] == "pixels" and report["unreadable"] == 0


def test_scoring_counts_a_group_false_unless_every_member_is_tied_by_a_true_pair():
    from benchmarks.planted import Planted

    copies = [Planted("planted/a.jpg", "x/a.jpg", ("jpeg 50",)), Planted("planted/b.jpg", "x/b.jpg", ("jpeg 50",))]
    twins = frozenset([frozenset(("x/a.jpg", "x/twin.jpg"))])
    groups = [["x/a.jpg", "planted/a.jpg", "x/twin.jpg"],  # a copy and its original's known twin: true
              ["x/b.jpg", "x/c.jpg"],  # the original with a stranger: false, and b's copy is not found
              ["planted/b.jpg"]]
    score = score_groups(groups, copies, twins)
    assert (score["found"], score["groups"], score["false_groups"]) == (1, 3, 2)
    assert score["false"] == [["x/b.jpg", "x/c.jpg"], ["planted/b.jpg"]] and score["recall"] == 0.5
