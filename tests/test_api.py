"""The HTTP API: shapes of DESIGN.md §3, parameters, bad input and the one error envelope — through Flask's test
client and through the real waitress server, with the same assertions for both."""
from __future__ import annotations

import gc
import io
import json
import shutil
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from encoder.variants import DEFAULT_VARIANT
from indexer.catalog import Catalog
from search_api.app import create_app
from search_api.client import SearchClient, SearchError
from tests.support import start_server, stop_server

N_IMAGES = 40  # the good images of the tiny collection (it also holds a corrupt, an empty and a text file)
SEARCH_KEYS = ["results", "took_ms", "k", "offset", "images", "model", "generation", "query"]
HIT_KEYS = {"id", "path", "distance", "score", "percentile", "copy", "thumbnail"}


# ---------------------------------------------------------------------------------------------------------------
# One way to talk to the API whether it is Flask's test client or the real server.

@dataclass
class Answer:
    status: int
    content_type: str
    headers: dict
    content: bytes

    def json(self):
        return json.loads(self.content)

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Via:
    """Sends a request through Flask's test client or to the live server, with the path exactly as given."""

    def __init__(self, name: str, client=None, url: str | None = None):
        self.name, self.client, self.url = name, client, url

    def __repr__(self) -> str:
        return self.name

    def request(self, method: str, path: str, *, body: bytes | None = None, image: bytes | None = None,
                content_type: str | None = None, fields: dict | None = None) -> Answer:
        if self.client is not None:
            if image is not None or fields is not None:
                data = dict(fields or {})
                if image is not None:
                    data["image"] = (io.BytesIO(image), "query.bin")
                r = self.client.open(path, method=method, data=data, content_type="multipart/form-data")
            else:
                r = self.client.open(path, method=method, data=body, content_type=content_type)
            with r:  # a send_file response holds the image file open until it is closed
                return Answer(r.status_code, r.headers.get("Content-Type", ""), dict(r.headers), r.get_data())
        kwargs: dict = {}
        if image is not None or fields is not None:
            kwargs["files"] = {**({"image": ("query.bin", image)} if image is not None else {}),
                               **{k: (None, v) for k, v in (fields or {}).items()}}
        elif body is not None:
            kwargs["data"] = body
            if content_type:
                kwargs["headers"] = {"Content-Type": content_type}
        prepared = requests.Request(method, self.url + "/", **kwargs).prepare()
        prepared.url = self.url + path  # as typed: requests would tidy "..", "%2e" and friends
        with requests.Session() as session:
            r = session.send(prepared, timeout=60)
        return Answer(r.status_code, r.headers.get("Content-Type", ""), dict(r.headers), r.content)

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, **kwargs) -> Answer:
        return self.request("POST", path, **kwargs)


# Werkzeug spools a multipart part over 500 KB to a temporary file; when the body limit stops the parse midway,
# that file is never closed and Python closes it only when it is garbage (a ResourceWarning, raised wherever the
# collector happens to run). These tests collect it themselves, so the warning is theirs and is expected.
werkzeug_spool = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning",
                                            "ignore::ResourceWarning")


def collect_spooled_files() -> None:
    """Collect Werkzeug's spooled multipart file now, inside the test whose 413 left it open."""
    gc.collect()


@pytest.fixture(params=["test_client", "live_server"])
def via(request, app) -> Via:
    if request.param == "test_client":
        return Via("test_client", client=app.test_client())
    return Via("live_server", url=request.getfixturevalue("live_server").url)


@pytest.fixture(scope="module")
def tuned_app(tiny_collection):
    """The app with small settings: 3 results by default, 16-pixel thumbnails, a 0.05 MB upload limit."""
    return create_app({"INDEX_DIR": str(tiny_collection.index_dir), "TESTING": True, "DEFAULT_K": 3,
                       "THUMBNAIL_SIZE": 16, "MAX_UPLOAD_MB": 0.05})


# ---------------------------------------------------------------------------------------------------------------
# Helpers

def short(value) -> str:
    """A readable test id for long parameters."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} chars)"


def rel(collection, path: Path) -> str:
    return path.relative_to(collection.images_dir).as_posix()


def assert_envelope(response, status: int, code: str | None = None) -> dict:
    """The response (an Answer, a requests or a test-client response) is the JSON error envelope with this status
    (and code)."""
    assert response.status_code == status, response.get_data()[:300] if hasattr(response, "get_data") else \
        response.text[:300]
    content_type = response.headers.get("Content-Type", "")
    assert content_type.startswith("application/json"), content_type
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip()
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width×height 8-bit grey pixels (the data holds one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
            + chunk(b"IEND", b""))


def real_bomb_png() -> bytes:
    """A complete, valid bilevel PNG of 10,000 × 10,000 pixels (about 12 KB): above Image.MAX_IMAGE_PIXELS, below
    twice that, so only the bomb *warning* fires — which preprocess must turn into a refusal."""
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    return png_bytes(Image.new("1", (10_000, 10_000)))


def search(via: Via, data: bytes, query: str = "", multipart: bool = True) -> dict:
    response = via.post(f"/api/search{query}", image=data) if multipart else via.post(f"/api/search{query}",
                                                                                       body=data)
    assert response.status == 200, response.text[:300]
    return response.json()


def own_id(via: Via, path: Path) -> int:
    """The id of an indexed image, found by searching with its own bytes."""
    return search(via, path.read_bytes(), "?k=1")["results"][0]["id"]


# ---------------------------------------------------------------------------------------------------------------
# POST /api/search

@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "raw_body"])
@pytest.mark.parametrize("index", [3, 21], ids=["jpeg", "png"])
def test_search_by_upload_shape_and_self_match(via, tiny_collection, multipart, index):
    query = tiny_collection.images[index]
    response = (via.post("/api/search", image=query.read_bytes()) if multipart
                else via.post("/api/search", body=query.read_bytes(), content_type="image/jpeg"))
    assert response.status == 200 and response.content_type.startswith("application/json")
    body = response.json()
    assert list(body) == SEARCH_KEYS
    assert (body["k"], body["offset"], body["images"]) == (10, 0, N_IMAGES)
    assert isinstance(body["took_ms"], (int, float)) and body["took_ms"] >= 0
    assert body["model"].startswith("sha256:") and len(body["model"]) == len("sha256:") + 64
    results = body["results"]
    assert len(results) == 10
    for hit in results:
        assert set(hit) == HIT_KEYS
        assert isinstance(hit["id"], int) and isinstance(hit["path"], str)
        assert isinstance(hit["distance"], float) or hit["distance"] == 0
        assert hit["distance"] >= 0 and 0 < hit["score"] <= 1
        assert hit["thumbnail"] == f"/api/images/{hit['id']}/thumbnail"
        assert isinstance(hit["copy"], bool) and (not hit["copy"] or hit is results[0])  # only the first is a copy
        assert not hit["path"].startswith("/") and ".." not in hit["path"].split("/") and "\\" not in hit["path"]
        assert (tiny_collection.images_dir / hit["path"]).is_file()  # relative to the indexed folder
    assert len({h["id"] for h in results}) == 10
    assert results[0]["path"] == rel(tiny_collection, query)
    assert results[0]["distance"] < 1e-4 and results[0]["score"] > 0.99
    distances = [h["distance"] for h in results]
    assert distances == sorted(distances)
    scores = [h["score"] for h in results]
    assert scores == sorted(scores, reverse=True)
    text = response.text
    for secret in (tiny_collection.images_dir, tiny_collection.index_dir, tiny_collection.images_dir.parent):
        assert str(secret) not in text  # no server path leaks
    query_facts = body["query"]
    assert set(query_facts) == {"reconstruction_error", "error_percentile", "unusual", "reasons", "signals"}
    assert isinstance(query_facts["unusual"], bool) and 0 <= query_facts["error_percentile"] <= 100
    assert set(query_facts["signals"]) == {"reconstruction", "code"}  # the tiny model was trained with them
    assert all(0 <= v <= 100 for v in query_facts["signals"].values())
    assert query_facts["unusual"] == bool(query_facts["reasons"])
    assert set(query_facts["reasons"]) <= {"reconstruction", "code"}


def test_every_indexed_image_finds_itself_first(client, tiny_collection):
    for path in tiny_collection.images:
        top = client.post("/api/search?k=1", data=path.read_bytes()).get_json()["results"]
        assert [h["path"] for h in top] == [rel(tiny_collection, path)]
        assert top[0]["distance"] < 1e-4


def test_a_search_without_the_out_of_domain_check(client, tiny_collection):
    """unusual=false skips the decoder: the same hits, in the same order, and no `query`."""
    data = tiny_collection.images[12].read_bytes()
    full = client.post("/api/search?k=8", data=data).get_json()
    for value in ("false", "0", "no", "False"):
        quick = client.post(f"/api/search?k=8&unusual={value}", data=data).get_json()
        assert "query" not in quick and "query" in full
        assert [h["id"] for h in quick["results"]] == [h["id"] for h in full["results"]]
        assert [h["distance"] for h in quick["results"]] == pytest.approx([h["distance"] for h in full["results"]],
                                                                          abs=1e-5)
    assert "query" in client.post("/api/search?k=8&unusual=true", data=data).get_json()
    bad = client.post("/api/search?unusual=maybe", data=data)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_parameter"
    assert "unusual" in bad.get_json()["error"]["message"]


def test_multipart_and_raw_body_agree(via, tiny_collection):
    data = tiny_collection.images[30].read_bytes()
    a = search(via, data, "?k=7", multipart=True)["results"]
    b = search(via, data, "?k=7", multipart=False)["results"]
    assert a == b


def test_raw_body_with_a_form_content_type_is_still_the_image(via, tiny_collection):
    """`curl --data-binary @x.jpg` sends application/x-www-form-urlencoded unless told otherwise."""
    query = tiny_collection.images[12]
    response = via.post("/api/search?k=2", body=query.read_bytes(), content_type="application/x-www-form-urlencoded")
    assert response.status == 200
    assert response.json()["results"][0]["path"] == rel(tiny_collection, query)


def test_default_k_is_the_setting(client, tuned_app, tiny_collection):
    data = tiny_collection.images[0].read_bytes()
    assert len(client.post("/api/search", data=data).get_json()["results"]) == 10
    body = tuned_app.test_client().post("/api/search", data=data).get_json()
    assert body["k"] == 3 and len(body["results"]) == 3
    assert tuned_app.test_client().post("/api/search?k=", data=data).get_json()["k"] == 3  # empty = default


@pytest.mark.parametrize("k", [1, 2, 39, 40, 41, 999, 1000])
def test_k_in_range_is_accepted(client, tiny_collection, k):
    response = client.post(f"/api/search?k={k}", data=tiny_collection.images[0].read_bytes())
    assert response.status_code == 200
    body = response.get_json()
    assert body["k"] == k
    assert len(body["results"]) == min(k, N_IMAGES)  # never more than the collection holds
    assert len({h["id"] for h in body["results"]}) == len(body["results"])


@pytest.mark.parametrize("query", ["k=0", "k=1001", "k=-1", "k=abc", "k=1.5", "k=1e2", "k=%201", "k=1_0", "k=%2B5",
                                   "k=%C2%B2", "k=%D9%A1", "k=" + "9" * 30, "k=%00", "offset=-1", "offset=10001",
                                   "offset=x", "offset=2.0"], ids=short)
def test_bad_paging_is_400(client, tiny_collection, query):
    error = assert_envelope(client.post(f"/api/search?{query}", data=tiny_collection.images[0].read_bytes()), 400,
                            "invalid_parameter")
    assert query.split("=")[0] in error["message"]


@pytest.mark.parametrize("query", ["k=0", "k=1001", "k=-1", "k=abc", "k=1.5"])
def test_bad_paging_is_400_on_the_real_server(live_server, tiny_collection, query):
    response = requests.post(f"{live_server.url}/api/search?{query}", data=tiny_collection.images[0].read_bytes(),
                             timeout=60)
    assert_envelope(response, 400, "invalid_parameter")


def test_offset_pages_through_the_same_ranking(via, tiny_collection):
    data = tiny_collection.images[2].read_bytes()
    whole = search(via, data, "?k=10")["results"]
    second = search(via, data, "?k=5&offset=5")
    assert second["results"] == whole[5:10] and (second["k"], second["offset"]) == (5, 5)
    assert search(via, data, "?k=3&offset=0")["results"] == whole[:3]
    everything = search(via, data, "?k=1000")["results"]
    assert len(everything) == N_IMAGES
    assert search(via, data, "?k=10&offset=35")["results"] == everything[35:]  # a short last page
    assert search(via, data, "?k=5&offset=40")["results"] == []
    assert search(via, data, "?k=5&offset=10000")["results"] == []


# ---------------------------------------------------------------------------------------------------------------
# GET /api/search?id=

def test_search_by_id_leaves_the_image_out(via, tiny_collection):
    image_id = own_id(via, tiny_collection.images[7])
    response = via.get(f"/api/search?id={image_id}&k=5")
    assert response.status == 200
    body = response.json()
    assert list(body) == SEARCH_KEYS[:-1]  # no "query" block: the query is in the collection
    ids = [h["id"] for h in body["results"]]
    assert len(ids) == 5 and image_id not in ids and len(set(ids)) == 5
    distances = [h["distance"] for h in body["results"]]
    assert distances == sorted(distances)
    everyone = via.get(f"/api/search?id={image_id}&k=1000").json()["results"]
    assert len(everyone) == N_IMAGES - 1 and image_id not in [h["id"] for h in everyone]
    assert via.get(f"/api/search?id={image_id}&k=4&offset=3").json()["results"] == everyone[3:7]


def test_search_by_id_agrees_with_search_by_upload(client, tiny_collection):
    """The neighbours of an indexed image are its upload's neighbours minus itself (PNG: identical pixels)."""
    data = tiny_collection.images[25].read_bytes()
    uploaded = client.post("/api/search?k=6", data=data).get_json()["results"]
    by_id = client.get(f"/api/search?id={uploaded[0]['id']}&k=5").get_json()["results"]
    assert [h["id"] for h in by_id] == [h["id"] for h in uploaded[1:]]


def test_every_id_excludes_itself(client):
    ids = [h["id"] for h in client.get("/api/search?id=1&k=1000").get_json()["results"]] + [1]
    assert len(set(ids)) == N_IMAGES
    for image_id in ids:
        results = client.get(f"/api/search?id={image_id}&k=3").get_json()["results"]
        assert len(results) == 3 and image_id not in [h["id"] for h in results]


@pytest.mark.parametrize("query,status,code", [
    ("", 400, "missing_parameter"),
    ("?k=5", 400, "missing_parameter"),
    ("?id=", 400, "invalid_parameter"),
    ("?id=abc", 400, "invalid_parameter"),
    ("?id=-1", 400, "invalid_parameter"),
    ("?id=1.0", 400, "invalid_parameter"),
    ("?id=%201", 400, "invalid_parameter"),
    ("?id=%C2%B2", 400, "invalid_parameter"),  # a superscript two: str.isdigit() says yes, int() says no
    ("?id=%D9%A1", 400, "invalid_parameter"),  # an Arabic-Indic one
    ("?id=1&k=0", 400, "invalid_parameter"),
    ("?id=1&offset=-3", 400, "invalid_parameter"),
    ("?id=0", 404, "not_found"),
    ("?id=424242", 404, "not_found"),
    ("?id=9223372036854775808", 404, "not_found"),  # above SQLite's integers
    ("?id=" + "9" * 50, 404, "not_found"),
    ("?id=" + "9" * 5000, 404, "not_found"),  # beyond int()'s default digit limit
], ids=lambda v: short(v) if isinstance(v, str) else str(v))
def test_bad_ids_in_search(via, query, status, code):
    assert_envelope(via.get(f"/api/search{query}"), status, code)


# ---------------------------------------------------------------------------------------------------------------
# GET /api/images/ID and /thumbnail

@pytest.mark.parametrize("index,mimetype", [(0, "image/jpeg"), (20, "image/png")])
def test_images_and_thumbnails_by_id(via, tiny_collection, index, mimetype):
    query = tiny_collection.images[index]
    hit = search(via, query.read_bytes(), "?k=1")["results"][0]
    original = via.get(f"/api/images/{hit['id']}")
    assert original.status == 200 and original.content_type == mimetype
    assert original.content == query.read_bytes()
    assert original.headers.get("X-Content-Type-Options") == "nosniff"
    thumb = via.get(hit["thumbnail"])
    assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as im:
        im.load()
        assert im.format == "JPEG" and im.mode == "RGB" and max(im.size) <= 256
        assert im.size == (48, 48)  # never enlarged


def test_thumbnail_size_is_the_setting(tuned_app, tiny_collection):
    client = tuned_app.test_client()
    image_id = client.post("/api/search?k=1", data=tiny_collection.images[22].read_bytes()).get_json()["results"][0][
        "id"]
    response = client.get(f"/api/images/{image_id}/thumbnail")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(response.data)) as im:
        im.load()
        assert im.format == "JPEG" and max(im.size) == 16  # 48×48 shrunk to the 16-pixel setting


def test_unknown_image_ids_are_404(via):
    for route in ("/api/images/999999", "/api/images/999999/thumbnail", "/api/images/0", "/api/images/0/thumbnail"):
        assert_envelope(via.get(route), 404, "not_found")


@pytest.mark.parametrize("raw", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%2e%2e", "-1", "1e3",
                                 "0x10", "1.0", "9" * 19, "9" * 40, "9" * 5000, "%00", "1%00", "1%2F..%2F..%2Fx",
                                 "%20%31", "%C2%B2", "%D9%A1", "abc", "~root"], ids=short)
def test_hostile_ids_are_404_never_a_file(via, raw):
    for route in (f"/api/images/{raw}", f"/api/images/{raw}/thumbnail"):
        response = via.get(route)
        assert_envelope(response, 404, "not_found")
        assert b"root:" not in response.content


@pytest.mark.parametrize("route", ["/api/images/../../../../etc/passwd", "/api/images/1/../../../etc/passwd",
                                   "/api/images/1/../../../../../../etc/passwd/thumbnail",
                                   "/api/images/%2e%2e/%2e%2e/etc/passwd", "/static/../../../../etc/passwd",
                                   "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/api/images//etc/passwd",
                                   "/api/images/1/../../../x"])
def test_path_traversal_in_the_url_is_404(via, route):
    response = via.get(route)
    assert response.status == 404, route
    assert b"root:" not in response.content
    assert_envelope(response, 404)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, tiny_collection):
    """A copy of the collection whose files changed after indexing: one removed, one replaced by a symlink that
    leads out of the folder, one overwritten with garbage."""
    root = tmp_path_factory.mktemp("damaged")
    images, index = root / "images", root / "index"
    shutil.copytree(tiny_collection.images_dir, images)
    shutil.copytree(tiny_collection.index_dir, index)
    with Catalog(index) as catalog, catalog.conn:  # the second: one committed transaction
        catalog.set_meta("root", str(images))
    app = create_app({"INDEX_DIR": str(index), "TESTING": True})
    client = app.test_client()
    ids = {}
    for name, path in (("removed", tiny_collection.images[1]), ("symlink", tiny_collection.images[2]),
                       ("garbage", tiny_collection.images[23])):
        ids[name] = client.post("/api/search?k=1", data=path.read_bytes()).get_json()["results"][0]["id"]
        copy = images / rel(tiny_collection, path)
        copy.unlink()
        if name == "symlink":
            copy.symlink_to("/etc/passwd")
        elif name == "garbage":
            copy.write_bytes(b"no longer an image")
    return client, ids, root


def test_files_gone_or_changed_since_indexing(damaged):
    client, ids, root = damaged
    for name in ("removed", "symlink"):
        for route in (f"/api/images/{ids[name]}", f"/api/images/{ids[name]}/thumbnail"):
            response = client.get(route)
            assert_envelope(response, 404, "not_found")
            assert b"root:" not in response.data and str(root).encode() not in response.data
    response = client.get(f"/api/images/{ids['garbage']}/thumbnail")
    error = assert_envelope(response, 404, "not_found")
    assert str(root) not in error["message"]  # the reason is logged, not sent: it can name the file
    with client.get(f"/api/images/{ids['garbage']}") as served:
        assert served.data == b"no longer an image"  # the file, as it is now
    assert client.get("/api/health").get_json() == {"status": "ok", "images": N_IMAGES}


# ---------------------------------------------------------------------------------------------------------------
# Bad uploads

BAD_IMAGES = {
    "corrupt": b"\xff\xd8\xff\xe0 definitely not a jpeg",
    "text": b"hello, this is a text file\n" * 20,
    "html": b"<!doctype html><html><body>hi</body></html>",
    "svg": b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    "png_header_only": b"\x89PNG\r\n\x1a\n",
    "bomb_error_range": bomb_png(30_000, 30_000),  # 900 Mpx: above twice MAX_IMAGE_PIXELS, Pillow raises
    "one_byte": b"\x00",
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_are_400(via, name):
    for response in (via.post("/api/search", body=BAD_IMAGES[name]), via.post("/api/search", image=BAD_IMAGES[name])):
        error = assert_envelope(response, 400, "invalid_image")
        assert error["message"].startswith("cannot use this image")


@pytest.mark.slow
def test_decompression_bombs_are_refused_as_such(via):
    for data in (bomb_png(30_000, 30_000), real_bomb_png()):
        error = assert_envelope(via.post("/api/search", body=data), 400, "invalid_image")
        assert "decompression-bomb" in error["message"]
    assert_envelope(via.post("/api/search", body=bomb_png(2_000_000_000, 2)), 400, "invalid_image")


@pytest.mark.parametrize("fraction", [2, 3], ids=["half", "third"])
def test_truncated_jpeg_is_400(via, tiny_collection, fraction):
    data = tiny_collection.images[1].read_bytes()
    assert data[:2] == b"\xff\xd8"
    assert_envelope(via.post("/api/search", body=data[: len(data) // fraction]), 400, "invalid_image")


def test_truncated_png_is_400(via, tiny_collection):
    data = tiny_collection.images[24].read_bytes()
    assert_envelope(via.post("/api/search", body=data[: len(data) // 2]), 400, "invalid_image")


def test_missing_image_is_400(via):
    assert_envelope(via.post("/api/search", body=b""), 400, "missing_image")
    assert_envelope(via.post("/api/search"), 400, "missing_image")
    assert_envelope(via.post("/api/search", image=b""), 400, "missing_image")
    assert_envelope(via.post("/api/search", fields={"other": "x"}), 400, "missing_image")
    assert_envelope(via.post("/api/search", fields={"image": "not a file"}), 400, "missing_image")


def test_odd_but_real_images_are_accepted(client):
    """A 1×1 picture, a palette GIF and a grey image are images: 200, whatever their neighbours."""
    for image in (Image.new("RGB", (1, 1), (200, 10, 10)), Image.new("L", (300, 7), 90)):
        assert client.post("/api/search?k=2", data=png_bytes(image)).status_code == 200
    gif = io.BytesIO()
    Image.new("P", (10, 10)).save(gif, "GIF")
    assert len(client.post("/api/search?k=2", data=gif.getvalue()).get_json()["results"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# Upload limit

@werkzeug_spool
def test_oversize_upload_is_413_in_the_test_client(tuned_app, tiny_collection):
    small = tuned_app.test_client()
    fits = tiny_collection.images[20].read_bytes()
    assert len(fits) < 50_000 and small.post("/api/search", data=fits).status_code == 200
    error = assert_envelope(small.post("/api/search", data=b"\x00" * 60_000), 413, "too_large")
    assert "0.05 MB" in error["message"]
    response = small.post("/api/search", data={"image": (io.BytesIO(b"\x00" * 60_000), "big.jpg")},
                          content_type="multipart/form-data")
    assert_envelope(response, 413, "too_large")
    # An oversize body is refused for what it is, before its image is looked at or its parameters checked.
    assert_envelope(small.post("/api/search?k=1", data=b"\x00" * 60_000), 413, "too_large")
    collect_spooled_files()


@werkzeug_spool
def test_a_huge_text_field_is_413_with_its_own_reason(client):
    response = client.post("/api/search", data={"image": "x" * 600_000}, content_type="multipart/form-data")
    error = assert_envelope(response, 413, "too_large")
    assert "form" in error["message"] and "MB limit" not in error["message"]
    collect_spooled_files()


@pytest.fixture(scope="module")
def limited_server(tiny_collection):
    """The real server with a 1 MB upload limit."""
    server = start_server(tiny_collection.index_dir, tiny_collection.images_dir, tiny_collection.images,
                          args=("--max-upload-mb", "1"))
    yield server
    stop_server(server)


def test_real_server_upload_limit(limited_server, tiny_collection):
    url = limited_server.url
    ok = requests.post(url + "/api/search", data=tiny_collection.images[0].read_bytes(), timeout=60)
    assert ok.status_code == 200
    # Between the limit and waitress's cap (limit + 1 MB): Flask's answer, in the envelope.
    over = requests.post(url + "/api/search", data=b"\x00" * 1_500_000, timeout=60)
    assert "1 MB" in assert_envelope(over, 413, "too_large")["message"]
    multipart = requests.post(url + "/api/search", files={"image": ("x.jpg", b"\x00" * 1_500_000)}, timeout=60)
    assert_envelope(multipart, 413, "too_large")
    chunked = requests.post(url + "/api/search", data=iter([b"\x00" * 500_000] * 3), timeout=60)  # no length
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert_envelope(chunked, 413, "too_large")
    # Far over: waitress refuses it before buffering it all; still 413, but waitress's own plain-text body.
    flood = requests.post(url + "/api/search", data=b"\x00" * 8_000_000, timeout=60)
    assert flood.status_code == 413
    assert requests.get(url + "/api/health", timeout=10).json() == {"status": "ok", "images": N_IMAGES}


def test_client_sees_both_kinds_of_413_as_too_large(limited_server):
    with SearchClient(limited_server.url, timeout=60) as client:
        for size in (1_500_000, 8_000_000):
            with pytest.raises(SearchError) as err:
                client.search(b"\x00" * size)
            assert (err.value.status, err.value.code) == (413, "too_large"), err.value
            assert err.value.message
        assert client.health()["status"] == "ok"


# ---------------------------------------------------------------------------------------------------------------
# The one envelope

ERRORS = [
    ("GET", "/nowhere", 404, "not_found"),
    ("GET", "/api/nowhere", 404, "not_found"),
    ("GET", "/api", 404, "not_found"),
    ("GET", "/api/images", 405, "method_not_allowed"),  # POST adds images
    ("POST", "/api/images", 403, "writes_disabled"),  # no LOOKALIKE_API_TOKEN on this server
    ("DELETE", "/api/images/1", 403, "writes_disabled"),
    ("GET", "/api/images/1/thumbnail/extra", 404, "not_found"),
    ("POST", "/nowhere", 404, "not_found"),
    ("DELETE", "/api/search", 405, "method_not_allowed"),
    ("PUT", "/api/search", 405, "method_not_allowed"),
    ("POST", "/api/health", 405, "method_not_allowed"),
    ("POST", "/api/info", 405, "method_not_allowed"),
    ("PUT", "/api/images/1", 405, "method_not_allowed"),
    ("DELETE", "/api/images/1/thumbnail", 405, "method_not_allowed"),
    ("POST", "/api/search?k=0", 400, "invalid_parameter"),
    ("POST", "/api/search", 400, "missing_image"),
    ("GET", "/api/search", 400, "missing_parameter"),
    ("GET", "/api/search?id=x", 400, "invalid_parameter"),
    ("GET", "/api/search?id=424242", 404, "not_found"),
    ("GET", "/api/images/424242", 404, "not_found"),
    ("GET", "/api/images/424242/thumbnail", 404, "not_found"),
]


@pytest.mark.parametrize("method,route,status,code", ERRORS, ids=[f"{m} {r}" for m, r, _, _ in ERRORS])
def test_every_error_uses_the_envelope(via, method, route, status, code):
    assert_envelope(via.request(method, route), status, code)


def test_bad_image_error_uses_the_envelope_on_both(via):
    assert_envelope(via.post("/api/search", body=b"junk"), 400, "invalid_image")


def test_405_lists_allowed_methods(via):
    response = via.request("DELETE", "/api/search")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    response = via.request("POST", "/api/health")
    assert "GET" in response.headers["Allow"] and "POST" not in response.headers["Allow"]


# ---------------------------------------------------------------------------------------------------------------
# Health and info

def test_health_and_info(via, tiny_collection):
    health = via.get("/api/health")
    assert health.status == 200 and health.content_type.startswith("application/json")
    assert health.json() == {"status": "ok", "images": N_IMAGES}
    assert len(tiny_collection.images) == N_IMAGES
    info = via.get("/api/info").json()
    sidecar = json.loads((tiny_collection.index_dir / "encoder.json").read_text())
    assert info["images"] == N_IMAGES and info["model"] == f"sha256:{sidecar['sha256']}"
    assert info["code_size"] == 8 and info["image_size"] == 16 and info["channels"] == 3
    assert info["variant"] == DEFAULT_VARIANT
    assert info["model"] == search(via, tiny_collection.images[0].read_bytes())["model"]
    assert str(tiny_collection.images_dir.parent) not in via.get("/api/info").text


def scrape(via) -> dict[tuple[str, tuple], float]:
    """/metrics parsed with prometheus-client's own parser: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = via.get("/metrics")
    assert response.status == 200 and response.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_metrics_count_requests_by_route_and_status(via, tiny_collection):
    before = scrape(via)
    search(via, tiny_collection.images[0].read_bytes())
    search(via, tiny_collection.images[1].read_bytes())
    assert via.get("/api/search?id=999999").status == 404
    assert via.get("/api/images/3/thumbnail").status == 200
    assert via.get("/no/such/page").status == 404
    after = scrape(via)

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    search_rule = dict(route="/api/search", method="POST", status="200")
    assert delta("lookalike_http_requests_total", **search_rule) == 2
    assert delta("lookalike_http_requests_total", route="/api/search", method="GET", status="404") == 1
    assert delta("lookalike_http_requests_total", route="/api/images/<raw_id>/thumbnail", method="GET",
                 status="200") == 1
    assert delta("lookalike_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta("lookalike_http_request_duration_seconds_count", route="/api/search") == 3
    assert delta("lookalike_http_request_duration_seconds_bucket", route="/api/search", le="+Inf") == 3
    assert after[("lookalike_collection_images", ())] == N_IMAGES
    info = via.get("/api/info").json()
    assert after[("lookalike_model_info", (("model", info["model"]), ("variant", DEFAULT_VARIANT)))] == 1
    assert after[("lookalike_collection_generation", ())] == info["generation"] > 0
    assert after[("lookalike_collection_switches_total", ())] == 0  # nothing was built while it ran


def test_significant_keeps_tiny_scores_above_zero():
    from search_api.api import significant

    assert significant(0.123456) == 0.1235 and significant(1.0) == 1.0
    assert 0 < significant(3.14159e-9) == 3.142e-9  # a far neighbour's score never rounds to 0


# ---------------------------------------------------------------------------------------------------------------
# Concurrency

def test_concurrent_searches_agree(live_server):
    payloads = [p.read_bytes() for p in live_server.images[::5]]  # 8 images, JPEG and PNG
    expected = [rel(live_server, p) for p in live_server.images[::5]]
    with requests.Session() as session:
        reference_by_id = {i: session.get(f"{live_server.url}/api/search?id={i}&k=3", timeout=60).json()["results"]
                           for i in range(1, 9)}
    failures: list[str] = []
    top_hits: dict[int, set] = {j: set() for j in range(len(payloads))}

    def worker(i: int) -> None:
        with requests.Session() as session:
            for round_ in range(10):
                j = (i + round_) % len(payloads)
                kind = round_ % 4
                try:
                    if kind == 0:
                        r = session.post(f"{live_server.url}/api/search?k=3", data=payloads[j], timeout=120)
                    elif kind == 1:
                        r = session.post(f"{live_server.url}/api/search?k=3", files={"image": ("q", payloads[j])},
                                         timeout=120)
                    elif kind == 2:
                        r = session.get(f"{live_server.url}/api/search?id={j + 1}&k=3", timeout=120)
                        if r.status_code != 200 or r.json()["results"] != reference_by_id[j + 1]:
                            failures.append(f"{i}/{round_} by id {j + 1}: {r.status_code} {r.text[:100]}")
                        continue
                    else:
                        r = session.get(f"{live_server.url}/api/images/{j + 1}/thumbnail", timeout=120)
                        if r.status_code != 200 or r.content[:3] != b"\xff\xd8\xff":
                            failures.append(f"{i}/{round_} thumbnail: {r.status_code}")
                        continue
                except requests.RequestException as exc:
                    failures.append(f"{i}/{round_}: {exc}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{i}/{round_}: {r.status_code} {r.text[:100]}")
                    continue
                top = r.json()["results"][0]["path"]
                top_hits[j].add(top)
                if top != expected[j]:
                    failures.append(f"{i}/{round_}: top hit {top}, expected {expected[j]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert all(len(hits) <= 1 for hits in top_hits.values())  # the same query, the same answer
    assert sum(len(h) for h in top_hits.values()) == len(payloads)  # every query was asked
