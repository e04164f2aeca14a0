"""A running server follows its collection: what a build publishes is served without a restart, with no failed or
half-answered search during the switch, and the server's own HTTP writes kept."""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests

from indexer.build import BuildOptions, build
from indexer.vectors import saved_generation
from tests.support import TINY, Searcher, make_image, run_cli, start_server, stop_server, wait_for, write_images

pytestmark = pytest.mark.slow  # trains tiny models and runs builds beside a server

TOKEN = "follow-token-0123456789"


def png(seed: int) -> bytes:
    import io

    out = io.BytesIO()
    make_image(seed).save(out, "PNG")
    return out.getvalue()


def test_a_running_server_serves_what_a_build_adds_with_no_failed_search(tmp_path):
    images, index = tmp_path / "images", tmp_path / "index"
    first = write_images(images, 40, sub="first")
    run_cli("indexer", "build", str(images), "--index", str(index), *TINY)
    server = start_server(index, images, first, extra_env={"LOOKALIKE_FOLLOW_SECONDS": "0.2",
                                                           "LOOKALIKE_API_TOKEN": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        info = requests.get(f"{server.url}/api/info", timeout=10).json()
        assert info["generation"] == saved_generation(index) and info["images"] == 40
        # The server's own write before the build: the build's vectors must hold it.
        before = requests.post(f"{server.url}/api/images", files={"image": ("before.png", png(9001))}, headers=auth,
                               timeout=30).json()["added"][0]
        added = write_images(images, 1000, start=5000, sub="added")
        with Searcher(server.url, [p.read_bytes() for p in first[:8]], list(range(1, 41))) as searcher:
            time.sleep(1)  # searches are running before the build starts
            report = build(images, index, BuildOptions(workers=1, progress=False, commit_every=128))
            assert report.indexed == 1000
            published = saved_generation(index)
            wait_for(lambda: requests.get(f"{server.url}/api/info", timeout=10).json()["generation"] == published)
            time.sleep(1)  # and go on after the switch
        assert searcher.problems == [] and searcher.tally["ok"] > 20
        assert searcher.generations == {info["generation"], published}  # the old generation, then the new one
        info = requests.get(f"{server.url}/api/info", timeout=10).json()
        assert info["images"] == 40 + 1 + 1000
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert f"lookalike_collection_generation {published}.0" in metrics
        assert "lookalike_collection_switches_total 1.0" in metrics
        # The new images are searchable: each finds itself first.
        for path in added[::250]:
            hits = requests.post(f"{server.url}/api/search?k=1", files={"image": (path.name, path.read_bytes())},
                                 timeout=30).json()["results"]
            assert hits[0]["path"] == f"added/{path.name}"
        hit = requests.get(f"{server.url}/api/search?id={before['id']}&k=1", timeout=30)
        assert hit.status_code == 200  # the write made before the build is in the new generation
        # A write after the switch goes into the new generation's vectors and is searchable at once.
        after = requests.post(f"{server.url}/api/images", files={"image": ("after.png", png(9002))}, headers=auth,
                              timeout=30).json()["added"][0]
        hits = requests.post(f"{server.url}/api/search?k=1", files={"image": ("q.png", png(9002))},
                             timeout=30).json()["results"]
        assert hits[0]["id"] == after["id"]
        assert requests.get(f"{server.url}/api/info", timeout=10).json()["images"] == 40 + 2 + 1000
    finally:
        stop_server(server)


def test_a_retrained_model_is_switched_to_and_searches_across_the_switch_never_fail(tmp_path):
    from search_api.engine import Engine

    images, index = tmp_path / "images", tmp_path / "index"
    paths = write_images(images, 30)
    build(images, index, BuildOptions(image_size=16, code_size=8, epochs=2, workers=1, progress=False))
    engine = Engine(index)
    failures: list[str] = []
    answered: Counter = Counter()
    stop = threading.Event()
    payloads = [p.read_bytes() for p in paths[:6]]

    def search() -> None:
        while not stop.is_set():
            try:
                result = engine.search_image(payloads[answered.total() % len(payloads)], k=5)
                assert len(result.hits) == 5 and result.served is not None
                answered[result.served.collection.encoder.model_id] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                failures.append(repr(exc))

    threads = [threading.Thread(target=search) for _ in range(3)]
    try:
        old_model = engine.model_id
        for t in threads:
            t.start()
        # A new model of another input size and code size: every code and every query's pixels change shape.
        build(images, index, BuildOptions(image_size=24, code_size=6, epochs=2, retrain=True, workers=1,
                                          progress=False))
        assert engine.follow()
        wait_for(lambda: answered[engine.model_id] >= 10)  # searches go on across the switch, on the new model
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert failures == []
        assert engine.model_id != old_model and set(answered) == {old_model, engine.model_id}
        assert engine.collection.encoder.image_size == 24 and engine.collection.vectors.dimension == 6
        assert engine.follow() is False  # nothing newer: no second switch
        hits = engine.search_image(paths[3].read_bytes(), k=1).hits
        assert hits[0].path == paths[3].name
        np.testing.assert_equal(engine.switches, 1)
    finally:
        stop.set()
        engine.close()


def test_a_server_does_not_switch_while_a_build_is_still_writing(tmp_path):
    from indexer.catalog import Catalog
    from indexer.lock import exclusive
    from search_api.engine import Engine

    images, index = tmp_path / "images", tmp_path / "index"
    write_images(images, 20)
    build(images, index, BuildOptions(image_size=16, code_size=8, epochs=2, workers=1, progress=False))
    engine = Engine(index)
    try:
        generation = engine.generation
        write_images(images, 5, start=100)
        build(images, index, BuildOptions(workers=1, progress=False))  # publishes newer vectors...
        published = saved_generation(index)
        with exclusive(index), Catalog(index) as catalog:  # ...and the next build has begun committing
            with catalog.conn:
                catalog.bump_generation()
            # The published vectors are already older than the catalogue: wait for that build's own, rather than
            # rebuild them in memory.
            assert engine.follow() is False and engine.generation == generation
        # The build ended without publishing (killed): nobody holds the collection, so the server catches up.
        assert engine.follow() is True and engine.generation == published + 1
        assert len(engine.collection) == 25 and engine.switches == 1
    finally:
        engine.close()


def test_with_nothing_to_switch_to_the_server_renews_its_snapshot_between_builds(tmp_path):
    from indexer.catalog import Catalog
    from indexer.lock import exclusive
    from search_api.engine import Engine

    images, index = tmp_path / "images", tmp_path / "index"
    paths = write_images(images, 20)
    build(images, index, BuildOptions(image_size=16, code_size=8, epochs=2, workers=1, progress=False))
    engine = Engine(index)  # read-only: another server takes the writes
    try:
        gone = engine.search_image(paths[4].read_bytes(), k=1).hits[0]
        with exclusive(index), Catalog(index) as catalog, catalog.conn:  # that server's delete
            catalog.remove([gone.path])
            catalog.bump_generation()
        assert gone.id in [h.id for h in engine.search_image(paths[4].read_bytes(), k=20).hits]  # the old snapshot
        with exclusive(index):  # while a build holds the collection the snapshot stays
            assert engine.follow() is False
            assert gone.id in [h.id for h in engine.search_image(paths[4].read_bytes(), k=20).hits]
        assert engine.follow() is False  # nothing to switch to, and nobody writing: the snapshot moves on
        assert gone.id not in [h.id for h in engine.search_image(paths[4].read_bytes(), k=20).hits]
        assert len(engine.search_image(paths[4].read_bytes(), k=19).hits) == 19  # pages stay full
    finally:
        engine.close()
