"""The whole loop as a user runs it: index a folder with the CLI, serve it, search it with the Python client."""
from __future__ import annotations

import json

import pytest

from search_api.client import SearchClient
from tests.support import TINY, run_cli, start_server, stop_server, write_images

pytestmark = pytest.mark.slow  # every test here trains, kills or serves: `make test-fast` leaves them out


def test_index_serve_and_search_every_image_finds_itself(tmp_path):
    images_dir, index_dir = tmp_path / "photos", tmp_path / "index"
    paths = (write_images(images_dir, 15, 0, ".jpg", "holiday/day1")
             + write_images(images_dir, 15, 300, ".png", "scans") + write_images(images_dir, 5, 600, ".webp"))
    (images_dir / "scans" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    built = json.loads(run_cli("indexer", "build", str(images_dir), "--index", str(index_dir), "--quiet", *TINY).stdout)
    assert built["indexed"] == 35 and built["skipped"] == 1

    server = start_server(index_dir, images_dir, paths)
    try:
        with SearchClient(server.url, timeout=30) as client:
            assert client.health() == {"status": "ok", "images": 35}
            for path in paths:
                hits = client.search(path, k=3)
                expected = path.relative_to(images_dir).as_posix()
                assert hits[0].path == expected, (expected, [h.path for h in hits])
                assert hits[0].distance <= hits[1].distance
                assert hits.model == built["model"]
            first = client.search(paths[0], k=1)[0]
            neighbours = client.search_by_id(first.id, k=5)
            assert len(neighbours) == 5 and first.id not in [h.id for h in neighbours]
            assert client.image(first.id) == paths[0].read_bytes()  # the original file, served by id
    finally:
        stop_server(server)

    # A second run picks up a new file; a restarted server sees it and finds it first.
    added = write_images(images_dir, 1, 900, ".jpg", "holiday/day2")
    again = json.loads(run_cli("indexer", "build", str(images_dir), "--index", str(index_dir), "--quiet").stdout)
    assert (again["indexed"], again["unchanged"]) == (1, 35)
    server = start_server(index_dir, images_dir, paths + added)
    try:
        with SearchClient(server.url, timeout=30) as client:
            assert client.search(added[0], k=1)[0].path == "holiday/day2/img_0900.jpg"
    finally:
        stop_server(server)
