"""The build pipeline in-process: training, incremental runs, skipped files, grey collections, model stamps."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from encoder import store
from indexer.build import SKIPPED_FILE, BuildError, BuildOptions, build
from indexer.catalog import Catalog
from indexer.collection import Collection
from tests.support import make_image, write_images

TINY = dict(image_size=16, code_size=8, epochs=2, workers=1, progress=False)


def relpaths(index_dir) -> set[str]:
    with Catalog(index_dir, readonly=True) as cat:
        return set(cat.fingerprints())


def ids_by_path(index_dir) -> dict[str, int]:
    with Catalog(index_dir, readonly=True) as cat:
        return {r.relpath: r.id for r in cat.records(cat.all_codes(8)[0]).values()}


@pytest.mark.slow
def test_incremental_runs_add_change_and_drop(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 12)
    first = build(images, index, BuildOptions(**TINY))
    assert (first.indexed, first.unchanged, first.removed, first.trained) == (12, 0, 0, True)
    before = ids_by_path(index)

    again = build(images, index, BuildOptions(**TINY))
    assert (again.indexed, again.unchanged, again.trained) == (0, 12, False)

    write_images(images, 3, start=50)  # added
    changed = images / "img_0001.jpg"
    make_image(999).save(changed)  # changed content
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    (images / "img_0002.jpg").unlink()  # deleted
    third = build(images, index, BuildOptions(**TINY))
    assert (third.indexed, third.unchanged, third.removed) == (4, 10, 1)
    assert third.images == 14
    paths = relpaths(index)
    assert "img_0002.jpg" not in paths and "img_0050.jpg" in paths
    after = ids_by_path(index)
    assert len(after) == 14 and len(set(after.values())) == 14  # no duplicate ids
    assert after["img_0001.jpg"] == before["img_0001.jpg"]  # a changed file keeps its id
    assert after["img_0005.jpg"] == before["img_0005.jpg"]
    assert after["img_0050.jpg"] > max(before.values())  # new files get new ids
    collection = Collection.open(index)
    try:
        code, _, sketch = collection.encode_image(changed)
        assert collection.neighbours(code, 1, sketch=sketch)[0].path == "img_0001.jpg"  # the new content was encoded
    finally:
        collection.close()


@pytest.mark.slow
def test_bad_files_are_skipped_reported_and_not_retried(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 8)
    (images / "empty.jpg").write_bytes(b"")
    (images / "random.png").write_bytes(np.random.default_rng(1).bytes(500))
    (images / "truncated.jpg").write_bytes((images / "img_0000.jpg").read_bytes()[:200])
    (images / "notes.txt").write_text("hello")
    report = build(images, index, BuildOptions(**TINY))
    assert report.indexed == 8
    reasons = dict(report.skipped)
    assert set(reasons) == {"empty.jpg", "random.png", "truncated.jpg", "notes.txt"}
    assert reasons["empty.jpg"] == "empty file"
    lines = (index / SKIPPED_FILE).read_text().splitlines()
    assert lines[0] == "path\treason" and len(lines) == 5 and any(l.startswith("random.png\t") for l in lines)
    rerun = build(images, index, BuildOptions(**TINY))
    assert rerun.indexed == 0 and len(rerun.skipped) == 4  # still reported, not decoded again
    (images / "empty.jpg").unlink()
    make_image(77).save(images / "empty.jpg")  # fixed by the user: indexed on the next run
    fixed = build(images, index, BuildOptions(**TINY))
    assert fixed.indexed == 1 and len(fixed.skipped) == 3


@pytest.mark.slow
def test_grey_collection_gets_a_single_channel_model(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    images.mkdir()
    for seed in range(10):
        make_image(seed).convert("L").save(images / f"{seed}.png")
    build(images, index, BuildOptions(**TINY))
    assert store.read_info(index)["channels"] == 1


@pytest.mark.slow
def test_model_stamp_mismatch_is_refused(tmp_path):
    images, index, other = tmp_path / "images", tmp_path / "index", tmp_path / "other"
    write_images(images, 10)
    build(images, index, BuildOptions(**TINY))
    build(images, other, BuildOptions(**{**TINY, "epochs": 1}))
    store.copy_model(other, index)  # swap in a different, untampered model
    write_images(images, 1, start=40)
    with pytest.raises(BuildError, match="--retrain"):
        build(images, index, BuildOptions(**TINY))
    with pytest.raises(store.ModelError, match="were made by model"):
        Collection.open(index)
    report = build(images, index, BuildOptions(**TINY, retrain=True))
    assert report.trained and report.indexed == 11
    Collection.open(index).close()


@pytest.mark.slow
def test_conflicting_options_and_fatal_errors(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 10)
    build(images, index, BuildOptions(**TINY))
    with pytest.raises(BuildError, match="code-size 8, not 16"):
        build(images, index, BuildOptions(**{**TINY, "code_size": 16}))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildError, match="no images found"):
        build(empty, tmp_path / "index2", BuildOptions(**TINY))
    with pytest.raises(BuildError, match="is not a folder"):
        build(tmp_path / "missing", tmp_path / "index3", BuildOptions(**TINY))


@pytest.mark.slow
def test_parallel_decoding_in_worker_processes(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 80)  # above the in-process threshold, so a spawn pool decodes
    report = build(images, index, BuildOptions(**{**TINY, "workers": 2}))
    assert report.indexed == 80


def test_decoding_stream_is_bounded_and_can_stop_early(tmp_path, monkeypatch):
    import indexer.decode as pipeline
    from indexer.scan import scan

    images = tmp_path / "images"
    write_images(images, 200)
    entries = scan(images).images
    monkeypatch.setattr(pipeline, "IN_FLIGHT", 8)  # far fewer than the files: the feeder must wait for the consumer
    with pipeline.decoding(images, entries, 16, 3, 2, False) as results:
        got = [d.entry.relpath for d in results]
    assert sorted(got) == sorted(e.relpath for e in entries)  # each file exactly once
    started = time.monotonic()
    with pytest.raises(KeyError):
        with pipeline.decoding(images, entries, 16, 3, 2, False) as results:
            for i, _ in enumerate(results):
                if i == 20:
                    raise KeyError("consumer stops")  # the pool and its feeding thread must not hang
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_input_size_follows_small_collections(tmp_path):
    from indexer.scan import scan
    from indexer.training_sample import natural_image_size

    small, large = tmp_path / "small", tmp_path / "large"
    write_images(small, 12)  # 48x48 pictures: trained at their own size, not blown up to 64
    large.mkdir()
    for seed in range(5):
        make_image(seed, 120).save(large / f"{seed}.png")
    assert natural_image_size(small, scan(small).images, 64) == 48
    assert natural_image_size(large, scan(large).images, 64) == 64
    from encoder.options import TrainConfig

    smaller = tmp_path / "smaller"  # below the default input size: trained at its own size
    smaller.mkdir()
    for seed in range(12):
        make_image(seed, 24).save(smaller / f"{seed}.png")
    assert 24 < TrainConfig().image_size
    index = tmp_path / "index"
    build(smaller, index, BuildOptions(**{**TINY, "image_size": None}))
    assert store.read_info(index)["image_size"] == 24


@pytest.mark.slow
def test_reconstruction_errors_are_measured_for_every_image_or_a_sample_and_codes_do_not_depend_on_it(tmp_path):
    images = tmp_path / "images"
    write_images(images, 60)
    build(images, tmp_path / "all", BuildOptions(**TINY))  # the default: every image (outliers rank them all)
    # The same model, a second collection measuring a sample of 15 of the 60 images.
    store.copy_model(tmp_path / "all", tmp_path / "some")
    build(images, tmp_path / "some", BuildOptions(**TINY, error_sample=15))
    with Catalog(tmp_path / "all", readonly=True) as everything, Catalog(tmp_path / "some", readonly=True) as some:
        assert len(everything.recon_errors()) == 60
        assert 3 <= len(some.recon_errors()) <= 35  # ~15, chosen by file hash
        full = everything.recon_errors()
        assert all(np.isclose(full, e, rtol=1e-4).any() for e in some.recon_errors())  # the same measurements
        ids_all, codes_all = everything.all_codes(8)
        ids_some, codes_some = some.all_codes(8)
        np.testing.assert_allclose(codes_some, codes_all, rtol=1e-5, atol=1e-6)  # encoder-only == with-error pass
    # The service's calibration comes from the sample.
    collection = Collection.open(tmp_path / "some")
    assert len(collection.vectors.meta["calibration"]["error_quantiles"]) == 1001
    collection.close()
