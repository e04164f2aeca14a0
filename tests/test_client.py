"""The Python client against the real server: every query type, typed results, errors, and a light import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from search_api.client import Hit, SearchClient, SearchError, SearchResponse
from tests.conftest import REPO, free_port


@pytest.fixture(scope="module")
def search_client(live_server):
    with SearchClient(live_server.url, timeout=30) as client:
        yield client


def expected_path(live_server, path) -> str:
    return path.relative_to(live_server.images_dir).as_posix()


def test_search_by_path_bytes_and_file(search_client, live_server):
    query = live_server.images[4]
    with open(query, "rb") as fh:
        answers = [search_client.search(query, k=5), search_client.search(str(query), k=5),
                   search_client.search(query.read_bytes(), k=5), search_client.search(fh, k=5)]
    for answer in answers:
        assert isinstance(answer, SearchResponse) and len(answer) == 5
        assert answer[0].path == expected_path(live_server, query)
        assert answer.images == 40 and answer.model.startswith("sha256:") and answer.k == 5
    hit = answers[0][0]
    assert isinstance(hit, Hit) and isinstance(hit.id, int) and isinstance(hit.distance, float)
    assert isinstance(hit.score, float) and 0 < hit.score <= 1
    assert [h.distance for h in answers[0]] == sorted(h.distance for h in answers[0])


def test_search_by_pil_image_and_arrays(search_client, live_server):
    query = live_server.images[33]  # a PNG: the decoded pixels are exactly what was indexed
    with Image.open(query) as im:
        rgb = im.convert("RGB")
    expected = expected_path(live_server, query)
    assert search_client.search(rgb, k=3)[0].path == expected
    assert search_client.search(np.asarray(rgb), k=3)[0].path == expected
    assert search_client.search(np.asarray(rgb)[:, :, :1], k=3).k == 3  # (H, W, 1) is accepted as grey
    grey = search_client.search(np.asarray(rgb.convert("L")), k=3)
    assert len(grey) == 3
    with pytest.raises(TypeError, match="uint8"):
        search_client.search(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="cannot send"):
        search_client.search(12345)


def test_search_by_id_and_paging(search_client, live_server):
    own = search_client.search(live_server.images[10], k=1)[0]
    neighbours = search_client.search_by_id(own.id, k=6)
    assert len(neighbours) == 6 and own.id not in [h.id for h in neighbours]
    page = search_client.search_by_id(own.id, k=3, offset=3)
    assert [h.id for h in page] == [h.id for h in neighbours.hits[3:6]] and page.offset == 3


def test_health_info_thumbnail_and_image(search_client, live_server):
    assert search_client.health() == {"status": "ok", "images": 40}
    assert search_client.info()["images"] == 40
    own = search_client.search(live_server.images[0], k=1)[0]
    assert search_client.thumbnail(own.id)[:3] == b"\xff\xd8\xff"
    assert search_client.image(own.id) == live_server.images[0].read_bytes()


def test_errors_are_search_errors(search_client):
    with pytest.raises(SearchError) as bad_image:
        search_client.search(b"not an image at all")
    assert (bad_image.value.status, bad_image.value.code) == (400, "invalid_image")
    assert "cannot use this image" in bad_image.value.message
    with pytest.raises(SearchError) as unknown:
        search_client.search_by_id(987654)
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(SearchError) as bad_k:
        search_client.search_by_id(1, k=5000)
    assert (bad_k.value.status, bad_k.value.code) == (400, "invalid_parameter")
    with pytest.raises(SearchError) as no_thumb:
        search_client.thumbnail(987654)
    assert no_thumb.value.status == 404


def test_unreachable_server_is_a_search_error():
    with SearchClient(f"http://127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(SearchError) as err:
            client.health()
    assert err.value.status == 0 and err.value.code == "connection_error"


def test_importing_the_client_loads_no_heavy_library():
    code = ("import sys; import search_api.client; "
            "print(','.join(m for m in ('tensorflow', 'keras', 'faiss', 'flask', 'numpy', 'PIL') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
