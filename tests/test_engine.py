"""The engine seam: LocalEngine's batches, and a second engine through the same writer making the same catalogue."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from encoder import store
from indexer.build import BuildOptions, build
from indexer.catalog import Catalog
from indexer.commit import commit_batches
from indexer.decode import decode_file
from indexer.engine import EncodedBatch, EncodeJob, Engine, LocalEngine, encode_batch
from indexer.scan import scan
from tests.support import write_images

pytestmark = pytest.mark.slow  # trains a tiny model


class OneAtATimeEngine:
    """A second engine: decodes in this process and encodes each image alone, in reverse order."""

    @contextmanager
    def run(self, job: EncodeJob) -> Iterator[Iterator[EncodedBatch]]:
        from encoder.embed import Encoder

        encoder = Encoder.load(job.index_dir)

        def batches() -> Iterator[EncodedBatch]:
            for entry in reversed(job.entries):
                result = decode_file(str(job.root), job.image_size, job.channels, entry)
                if result.pixels is None:
                    yield EncodedBatch([], [(entry, result.reason)])
                else:
                    yield EncodedBatch(encode_batch(encoder, [result], job.error_share), [])

        yield batches()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    """12 images and an empty file, with a tiny model trained on them (nothing encoded yet)."""
    root = tmp_path_factory.mktemp("engine")
    images, index = root / "images", root / "index"
    write_images(images, 12)
    (images / "empty.jpg").write_bytes(b"")
    build(images, index, BuildOptions(image_size=16, code_size=8, epochs=2, workers=1, progress=False),
          train_only=True)
    return images, index


def job_for(images: Path, index: Path, commit_every: int) -> EncodeJob:
    info = store.read_info(index)
    return EncodeJob(images, index, scan(images).images, info["image_size"], info["channels"], error_share=0.5,
                     commit_every=commit_every)


def test_local_batches_end_where_transactions_do(collection):
    images, index = collection
    with LocalEngine(workers=1, progress=False).run(job_for(images, index, commit_every=5)) as batches:
        got = list(batches)
    assert [len(b.rows) for b in got] == [5, 5, 2]  # 12 readable images, cut at every 5th
    assert [(e.relpath, why) for b in got for e, why in b.failed] == [("empty.jpg", "empty file")]
    assert sorted(r.relpath for b in got for r in b.rows) == sorted(p.name for p in images.glob("img_*.jpg"))


def test_another_engine_through_the_same_writer_makes_the_same_catalogue(collection, tmp_path):
    images, index = collection
    written = {}
    engine: Engine
    for name, engine in (("local", LocalEngine(workers=1, progress=False)), ("other", OneAtATimeEngine())):
        target = tmp_path / name
        with Catalog(target) as catalog:
            with engine.run(job_for(images, index, commit_every=4)) as batches:
                committed = commit_batches(catalog, batches, commit_every=4)
            _, codes = catalog.all_codes(8)
            paths = catalog.relpaths()
            rows = catalog.conn.execute("SELECT relpath, sha256, width, recon_error IS NULL FROM images").fetchall()
            written[name] = (committed, dict(zip(paths, codes)), sorted(rows), catalog.skipped_fingerprints())
    (local, local_codes, local_rows, local_skipped), (other, other_codes, other_rows, other_skipped) = (
        written["local"], written["other"])
    assert local.indexed == other.indexed == 12
    assert local.skipped == other.skipped == [("empty.jpg", "empty file")]
    assert local_rows == other_rows  # same files, hashes, sizes and the same reconstruction-error sample
    assert 0 < sum(r[3] for r in local_rows) < 12  # the sample is a part, chosen by hash
    assert local_skipped == other_skipped
    for path, code in local_codes.items():
        np.testing.assert_allclose(other_codes[path], code, rtol=1e-4, atol=1e-5)  # batch of 1 or of 4: same code
