"""The HTTP API: shapes of DESIGN.md §3, parameters, bad input and the one error envelope — through Flask's test
client and through the real waitress server."""
from __future__ import annotations

import io
import json
import threading
import struct
import zlib

import pytest
import requests
from PIL import Image

from search_api.app import create_app
from tests.conftest import start_server, stop_server


def rel(collection, path) -> str:
    return path.relative_to(collection.images_dir).as_posix()


def assert_envelope(response, status: int, code: str | None = None) -> dict:
    """The response is the JSON error envelope with this status (and code)."""
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.get_json() if hasattr(response, "get_json") else response.json()  # test client or requests
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG that declares width×height pixels (the IDAT holds one row): Pillow's bomb guard must stop it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
            + chunk(b"IEND", b""))


def test_search_by_upload_shape_and_self_match(client, tiny_collection):
    query = tiny_collection.images[21]
    response = client.post("/api/search", data={"image": (io.BytesIO(query.read_bytes()), "q.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["results", "took_ms", "k", "offset", "images", "model", "query"]
    assert (body["k"], body["offset"], body["images"]) == (10, 0, 40)
    assert body["model"].startswith("sha256:") and body["took_ms"] >= 0
    results = body["results"]
    assert len(results) == 10
    for hit in results:
        assert set(hit) == {"id", "path", "distance", "score", "thumbnail"}
        assert hit["thumbnail"] == f"/api/images/{hit['id']}/thumbnail"
        assert not hit["path"].startswith("/") and ".." not in hit["path"]
        assert 0 < hit["score"] <= 1
    assert results[0]["path"] == rel(tiny_collection, query) and results[0]["distance"] < 1e-4
    distances = [h["distance"] for h in results]
    assert distances == sorted(distances)
    assert str(tiny_collection.images_dir) not in response.get_data(as_text=True)  # no server paths leak
    assert set(body["query"]) == {"reconstruction_error", "error_percentile", "unusual"}


def test_search_by_raw_body(client, tiny_collection):
    query = tiny_collection.images[5]
    response = client.post("/api/search?k=3", data=query.read_bytes(), content_type="image/jpeg")
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == 3 and results[0]["path"] == rel(tiny_collection, query)


@pytest.mark.parametrize("k", ["1", "40", "1000"])
def test_k_in_range_is_accepted(client, tiny_collection, k):
    response = client.post(f"/api/search?k={k}", data=tiny_collection.images[0].read_bytes())
    assert response.status_code == 200
    assert len(response.get_json()["results"]) == min(int(k), 40)  # never more than the collection holds


@pytest.mark.parametrize("query", ["k=0", "k=1001", "k=-1", "k=abc", "k=1.5", "offset=-1", "offset=10001",
                                   "offset=x", "k=%00"])
def test_bad_paging_is_400(client, tiny_collection, query):
    response = client.post(f"/api/search?{query}", data=tiny_collection.images[0].read_bytes())
    assert_envelope(response, 400, "invalid_parameter")


def test_offset_pages_through_the_same_ranking(client, tiny_collection):
    data = tiny_collection.images[2].read_bytes()
    whole = client.post("/api/search?k=10", data=data).get_json()["results"]
    second = client.post("/api/search?k=5&offset=5", data=data).get_json()
    assert [h["id"] for h in second["results"]] == [h["id"] for h in whole[5:10]]
    assert second["offset"] == 5
    beyond = client.post("/api/search?k=5&offset=100", data=data).get_json()
    assert beyond["results"] == []


def test_search_by_id_leaves_the_image_out(client, tiny_collection):
    own = client.post("/api/search?k=1", data=tiny_collection.images[7].read_bytes()).get_json()["results"][0]
    body = client.get(f"/api/search?id={own['id']}&k=5").get_json()
    ids = [h["id"] for h in body["results"]]
    assert len(ids) == 5 and own["id"] not in ids and "query" not in body
    assert_envelope(client.get("/api/search?id=999999"), 404, "not_found")
    assert_envelope(client.get("/api/search"), 400, "missing_parameter")
    assert_envelope(client.get("/api/search?id=abc"), 400, "invalid_parameter")
    assert_envelope(client.get(f"/api/search?id={own['id']}&k=0"), 400, "invalid_parameter")


def test_images_and_thumbnails_by_id(client, tiny_collection):
    query = tiny_collection.images[0]
    hit = client.post("/api/search?k=1", data=query.read_bytes()).get_json()["results"][0]
    original = client.get(f"/api/images/{hit['id']}")
    assert original.status_code == 200 and original.data == query.read_bytes()
    assert original.mimetype == "image/jpeg"
    thumb = client.get(hit["thumbnail"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(thumb.data)) as im:
        assert im.format == "JPEG" and max(im.size) <= 256
    for route in ("/api/images/999999", "/api/images/999999/thumbnail"):
        assert_envelope(client.get(route), 404, "not_found")


@pytest.mark.parametrize("raw", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "-1", "1e3", "0x10",
                                 "9" * 40, "%00", "1%2F..%2F..%2Fx", "%20%31"])
def test_hostile_ids_are_404_never_a_file(client, raw):
    for route in (f"/api/images/{raw}", f"/api/images/{raw}/thumbnail"):
        response = client.get(route)
        assert_envelope(response, 404)
        assert b"root:" not in response.data


def test_path_traversal_in_the_url_is_404(live_server):
    for route in ("/api/images/../../../../etc/passwd", "/api/images/1/../../../etc/passwd",
                  "/static/../../../../etc/passwd", "/api/images/%2e%2e/%2e%2e/etc/passwd"):
        # requests would normalise "..": send the path as typed
        session = requests.Session()
        prepared = requests.Request("GET", live_server.url + "/").prepare()
        prepared.url = live_server.url + route
        response = session.send(prepared, timeout=10)
        assert response.status_code == 404, route
        assert b"root:" not in response.content


@pytest.mark.parametrize("name,payload", [
    ("corrupt", b"\xff\xd8\xff\xe0 definitely not a jpeg"),
    ("text", b"hello, this is a text file\n"),
    ("bomb", bomb_png()),
])
def test_bad_images_are_400(client, name, payload):
    error = assert_envelope(client.post("/api/search", data=payload), 400, "invalid_image")
    assert "cannot use this image" in error["message"]


def test_truncated_jpeg_is_400(client, tiny_collection):
    data = tiny_collection.images[1].read_bytes()
    assert_envelope(client.post("/api/search", data=data[: len(data) // 3]), 400, "invalid_image")


def test_missing_image_is_400(client):
    assert_envelope(client.post("/api/search", data=b""), 400, "missing_image")
    response = client.post("/api/search", data={"other": (io.BytesIO(b"x"), "x.jpg")},
                           content_type="multipart/form-data")
    assert_envelope(response, 400, "missing_image")


def test_oversize_upload_is_413_in_the_test_client(tiny_collection):
    app = create_app({"INDEX_DIR": str(tiny_collection.index_dir), "MAX_UPLOAD_MB": 0.01, "TESTING": True})
    small = app.test_client()
    error = assert_envelope(small.post("/api/search", data=b"\x00" * 20_000), 413, "too_large")
    assert "0.01 MB" in error["message"]
    response = small.post("/api/search", data={"image": (io.BytesIO(b"\x00" * 20_000), "big.jpg")},
                          content_type="multipart/form-data")
    assert_envelope(response, 413, "too_large")


@pytest.mark.parametrize("method,route,status,code", [
    ("GET", "/nowhere", 404, "not_found"),
    ("GET", "/api/nowhere", 404, "not_found"),
    ("DELETE", "/api/search", 405, "method_not_allowed"),
    ("POST", "/api/health", 405, "method_not_allowed"),
    ("PUT", "/api/images/1", 405, "method_not_allowed"),
    ("POST", "/api/search?k=0", 400, "invalid_parameter"),
    ("POST", "/api/search", 400, "missing_image"),
    ("GET", "/api/search?id=424242", 404, "not_found"),
])
def test_every_error_uses_the_envelope(client, live_server, method, route, status, code):
    assert_envelope(client.open(route, method=method), status, code)
    real = requests.request(method, live_server.url + route, timeout=10)
    assert_envelope(real, status, code)


def test_405_lists_allowed_methods(client):
    response = client.delete("/api/search")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_health_and_info(client, tiny_collection):
    assert client.get("/api/health").get_json() == {"status": "ok", "images": 40}
    info = client.get("/api/info").get_json()
    sidecar = json.loads((tiny_collection.index_dir / "encoder.json").read_text())
    assert info["images"] == 40 and info["model"] == f"sha256:{sidecar['sha256']}"
    assert info["code_size"] == 8 and info["variant"] == "denoising"


def test_real_server_upload_limit(tiny_collection):
    server = start_server(tiny_collection.index_dir, tiny_collection.images_dir, tiny_collection.images,
                          args=("--max-upload-mb", "1"))
    try:
        ok = requests.post(server.url + "/api/search", data=tiny_collection.images[0].read_bytes(), timeout=30)
        assert ok.status_code == 200
        over = requests.post(server.url + "/api/search", data=b"\x00" * 1_500_000, timeout=30)
        assert_envelope(over, 413, "too_large")  # just over the limit: Flask's answer, in the envelope
        multipart = requests.post(server.url + "/api/search", files={"image": ("x.jpg", b"\x00" * 1_500_000)},
                                  timeout=30)
        assert_envelope(multipart, 413, "too_large")
        flood = requests.post(server.url + "/api/search", data=b"\x00" * 8_000_000, timeout=30)
        assert flood.status_code == 413  # far over: waitress refuses it before reading it all
        assert requests.get(server.url + "/api/health", timeout=10).status_code == 200  # still serving
    finally:
        stop_server(server)


def test_concurrent_searches_agree(live_server):
    payloads = [p.read_bytes() for p in live_server.images[:8]]
    expected = [rel(live_server, p) for p in live_server.images[:8]]
    failures: list[str] = []

    def worker(i: int) -> None:
        with requests.Session() as session:
            for round_ in range(10):
                j = (i + round_) % len(payloads)
                response = session.post(live_server.url + "/api/search?k=3", data=payloads[j], timeout=60)
                if response.status_code != 200 or response.json()["results"][0]["path"] != expected[j]:
                    failures.append(f"{i}/{round_}: {response.status_code} {response.text[:100]}")
                by_id = session.get(live_server.url + f"/api/search?id={j + 1}&k=3", timeout=60)
                if by_id.status_code != 200:
                    failures.append(f"{i}/{round_} by id: {by_id.status_code}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
