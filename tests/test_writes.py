"""Writes over HTTP: POST /api/images and DELETE /api/images/ID behind a bearer token, on a real collection copy."""
from __future__ import annotations

import fcntl
import io
import json
import shutil
import threading
import time
from contextlib import ExitStack

import pytest
import requests

from indexer.catalog import Catalog
from search_api.app import create_app
from tests.support import TINY, make_image, run_cli, start_server, stop_server

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    make_image(seed).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture()
def collection(tmp_path, tiny_collection):
    """A private copy of the tiny collection (writes change it), its catalogue pointed at the copied images."""
    images, index = tmp_path / "images", tmp_path / "index"
    shutil.copytree(tiny_collection.images_dir, images)
    shutil.copytree(tiny_collection.index_dir, index)
    with Catalog(index) as catalog, catalog.conn:
        catalog.set_meta("root", str(images))
    return images, index


@pytest.fixture()
def client(collection):
    app = create_app({"INDEX_DIR": str(collection[1]), "API_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"})
    yield app.test_client()
    app.extensions["lookalike.engine"].close()


def count(index) -> int:
    with Catalog(index, readonly=True) as catalog:
        return catalog.count()


def search(client, data: bytes, k: int = 5) -> list[dict]:
    response = client.post(f"/api/search?k={k}", data={"image": (io.BytesIO(data), "q.jpg")})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["results"]


def test_writes_need_the_right_token(client, collection):
    body = {"image": (io.BytesIO(jpeg(900)), "new.jpg")}
    missing = client.post("/api/images", data=body)
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ({"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
                   {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}):
        refused = client.post("/api/images", headers=header, data={"image": (io.BytesIO(jpeg(900)), "new.jpg")})
        assert refused.status_code in (401, 403), header
        assert refused.get_json()["error"]["code"] in ("unauthorized", "forbidden")
    assert client.delete("/api/images/1").status_code == 401
    assert client.delete("/api/images/1", headers={"Authorization": "Bearer nope-nope-nope-nope"}).status_code == 403
    assert count(collection[1]) == 40 and not (collection[0] / "uploads").exists()  # nothing was written


def test_added_images_are_stored_indexed_and_found_at_once(client, collection):
    images, index = collection
    data = [jpeg(901), jpeg(902)]
    response = client.post("/api/images", headers=AUTH,
                           data={"image": [(io.BytesIO(data[0]), "a.jpg"), (io.BytesIO(data[1]), "b.jpg")]})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["images"] == 42 and [a["new"] for a in body["added"]] == [True, True]
    for added, raw in zip(body["added"], data):
        assert added["path"].startswith("uploads/") and (images / added["path"]).read_bytes() == raw
        assert search(client, raw)[0]["id"] == added["id"]  # searchable at once, its own nearest neighbour
        with client.get(f"/api/images/{added['id']}") as served:
            assert served.data == raw
        assert client.get(f"/api/search?id={added['id']}&k=3").status_code == 200
    twice = client.post("/api/images", headers=AUTH,
                        data={"image": [(io.BytesIO(jpeg(907)), "c.jpg"), (io.BytesIO(jpeg(907)), "c-again.jpg")]})
    assert [(a["new"]) for a in twice.get_json()["added"]] == [True, False]
    assert len({a["id"] for a in twice.get_json()["added"]}) == 1
    client.delete(f"/api/images/{twice.get_json()['added'][0]['id']}", headers=AUTH)
    again = client.post("/api/images", headers=AUTH, data=data[0], content_type="image/jpeg")  # raw body
    assert again.status_code == 200 and again.get_json()["added"][0] == {**body["added"][0], "new": False}
    assert count(index) == 42 and client.get("/api/health").get_json()["images"] == 42
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "lookalike_collection_images 42.0" in metrics
    # The next build finds the uploads already indexed: nothing to encode.
    summary = json.loads(run_cli("indexer", "build", str(images), "--index", str(index), "--quiet", *TINY).stdout)
    assert (summary["indexed"], summary["images"]) == (0, 42)


def test_one_bad_image_adds_none(client, collection):
    response = client.post("/api/images", headers=AUTH, data={"image": [
        (io.BytesIO(jpeg(903)), "good.jpg"), (io.BytesIO(b"\xff\xd8\xff\xe0 truncated"), "bad.jpg")]})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_image" and "image 2" in error["message"] and "bad.jpg" in error["message"]
    assert count(collection[1]) == 40 and not list((collection[0] / "uploads").glob("*.jpg"))
    empty = client.post("/api/images", headers=AUTH, data=b"", content_type="image/jpeg")
    assert empty.status_code == 400 and empty.get_json()["error"]["code"] == "missing_image"


def test_deleted_images_disappear_and_stay_out_of_later_builds(client, collection):
    images, index = collection
    data = jpeg(904)
    added = client.post("/api/images", headers=AUTH, data={"image": (io.BytesIO(data), "x.jpg")}).get_json()
    upload_id, upload_path = added["added"][0]["id"], images / added["added"][0]["path"]
    gone = client.delete(f"/api/images/{upload_id}", headers=AUTH)
    assert gone.status_code == 200 and gone.get_json()["deleted"] == upload_id
    assert not upload_path.exists()  # an uploaded file goes with its image
    assert upload_id not in [h["id"] for h in search(client, data, k=40)]
    assert client.get(f"/api/images/{upload_id}").status_code == 404
    assert client.delete(f"/api/images/{upload_id}", headers=AUTH).status_code == 404  # only once

    own = search(client, (images / "jpegs" / "img_0003.jpg").read_bytes())[0]  # a file of the user's folder
    assert own["path"] == "jpegs/img_0003.jpg"
    assert client.delete(f"/api/images/{own['id']}", headers=AUTH).status_code == 200
    assert (images / own["path"]).is_file()  # the user's own file is never deleted by the API
    assert own["id"] not in [h["id"] for h in search(client, (images / own["path"]).read_bytes(), k=40)]
    assert count(index) == 39 and client.get("/api/health").get_json()["images"] == 39
    summary = json.loads(run_cli("indexer", "build", str(images), "--index", str(index), "--quiet", *TINY).stdout)
    assert summary["indexed"] == 0 and summary["images"] == 39  # the tombstone keeps it out
    skipped = (index / "skipped.tsv").read_text()
    assert "jpegs/img_0003.jpg\tdeleted over HTTP" in skipped


def test_pages_stay_full_in_the_moment_between_a_removal_and_its_vectors(client, collection):
    """A delete commits to the catalogue first and to the vectors just after; a search in between gets full pages."""
    images, index = collection
    query = (images / "jpegs" / "img_0003.jpg").read_bytes()
    before = search(client, query, k=10)
    with Catalog(index) as catalog, catalog.conn:  # the catalogue half of a removal, the vectors not yet told
        catalog.remove([h["path"] for h in before[:3]])
    client.application.extensions["lookalike.engine"].collection.catch_up()  # what the writer does after a commit
    after = search(client, query, k=10)
    assert len(after) == 10 and not {h["id"] for h in before[:3]} & {h["id"] for h in after}
    assert [h["id"] for h in after[:7]] == [h["id"] for h in before[3:]]
    page = client.post("/api/search?k=5&offset=5", data={"image": (io.BytesIO(query), "q.jpg")}).get_json()
    assert [h["id"] for h in page["results"]] == [h["id"] for h in after[5:10]]


@pytest.mark.parametrize("raw", ["..%2F..%2Fetc%2Fpasswd", "-1", "1.0", "%00", "99999999999999999999", "abc"])
def test_delete_takes_ids_only(client, raw):
    response = client.delete(f"/api/images/{raw}", headers=AUTH)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_writes_wait_for_a_running_build(client, collection):
    with open(collection[1] / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what `indexer build` holds while it runs
        busy = client.post("/api/images", headers=AUTH, data={"image": (io.BytesIO(jpeg(905)), "x.jpg")})
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "busy"
    assert count(collection[1]) == 40
    assert client.post("/api/images", headers=AUTH, data={"image": (io.BytesIO(jpeg(905)), "x.jpg")}).status_code == 201


def vectors_generation(index) -> tuple[int, int]:
    """(generation of the saved vectors, generation of the catalogue)."""
    with Catalog(index, readonly=True) as catalog:
        return json.loads((index / "vectors.json").read_text())["generation"], catalog.generation


def test_a_writing_server_saves_the_vectors_its_writes_made_stale(collection):
    images, index = collection
    app = create_app({"INDEX_DIR": str(index), "API_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"})
    added = app.test_client().post("/api/images", headers=AUTH, data={"image": (io.BytesIO(jpeg(940)), "n.jpg")})
    assert added.status_code == 201
    app.extensions["lookalike.engine"].close()
    saved, catalogue = vectors_generation(index)
    assert saved < catalogue  # the write is in the catalogue; the saved vectors predate it

    def start(config: dict):
        app = create_app({"INDEX_DIR": str(index), "LOG_LEVEL": "WARNING", **config})
        found = search(app.test_client(), jpeg(940), k=1)[0]
        app.extensions["lookalike.engine"].close()
        return found

    assert start({})["id"] == added.get_json()["added"][0]["id"]  # a read-only server rebuilds them in memory
    assert vectors_generation(index)[0] == saved  # ... and writes nothing
    with open(index / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a build is running: serve from memory, save nothing
        assert start({"API_TOKEN": TOKEN})["distance"] == 0
    assert vectors_generation(index)[0] == saved
    assert start({"API_TOKEN": TOKEN})["distance"] == 0  # a writing server saves them
    assert vectors_generation(index) == (catalogue, catalogue)
    with Catalog(index, readonly=True) as catalog:
        assert len(list(index.glob("vectors-*.faiss"))) == 1 and catalog.count() == 41


def test_a_build_waits_out_a_short_write_but_not_another_build(collection, monkeypatch):
    from indexer import build
    from indexer.lock import exclusive

    images, index = collection
    holder = threading.Thread(target=lambda: (time.sleep(0.5), held.close()))
    held = ExitStack()
    held.enter_context(exclusive(index))  # what a server holds while it writes
    started = time.monotonic()
    holder.start()
    with build._exclusive(index):  # waits the half second, then has the collection to itself
        assert time.monotonic() - started >= 0.45
    holder.join()
    monkeypatch.setattr(build, "LOCK_WAIT", 0.3)
    with exclusive(index), pytest.raises(build.BuildError, match="another build"):
        with build._exclusive(index):
            pass


@pytest.mark.slow
def test_searches_during_writes_see_no_errors_and_a_restart_keeps_the_writes(collection):
    images, index = collection
    server = start_server(index, images, [], extra_env={"LOOKALIKE_API_TOKEN": TOKEN})
    errors: list[str] = []
    stop = threading.Event()
    query = (images / "pngs" / "img_0105.png").read_bytes()

    def searcher() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                r = session.post(f"{server.url}/api/search?k=10", files={"image": ("q.png", query)}, timeout=30)
                hits = r.json().get("results", []) if r.ok else []
                if r.status_code != 200 or len(hits) != 10 or len({h["id"] for h in hits}) != 10:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    added_ids = []
    try:
        with requests.Session() as session:
            for seed in range(910, 930):
                r = session.post(f"{server.url}/api/images", headers=AUTH, files={"image": ("n.jpg", jpeg(seed))})
                assert r.status_code == 201, r.text
                added_ids.append(r.json()["added"][0]["id"])
            for image_id in added_ids[:5]:
                assert session.delete(f"{server.url}/api/images/{image_id}", headers=AUTH).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
        stop_server(server)
    assert errors == []
    assert count(index) == 55
    server = start_server(index, images, [])  # a fresh start: the writes are in the catalogue, nothing lost
    try:
        assert requests.get(f"{server.url}/api/health").json()["images"] == 55
        r = requests.post(f"{server.url}/api/search?k=1", files={"image": ("n.jpg", jpeg(929))})
        assert r.json()["results"][0]["id"] == added_ids[-1]
        denied = requests.post(f"{server.url}/api/images", headers=AUTH, files={"image": ("n.jpg", jpeg(931))})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "writes_disabled"
    finally:
        stop_server(server)


@pytest.mark.slow
def test_the_python_client_adds_and_deletes(collection):
    from search_api.client import SearchClient, SearchError

    images, index = collection
    server = start_server(index, images, [], extra_env={"LOOKALIKE_API_TOKEN": TOKEN})
    try:
        with SearchClient(server.url, token=TOKEN) as client:
            added = client.add_images(jpeg(940), make_image(941))  # bytes and a PIL image
            assert [a["new"] for a in added] == [True, True] and client.health()["images"] == 42
            assert client.search(jpeg(940), k=1)[0].id == added[0]["id"]
            assert client.delete_image(added[0]["id"])["images"] == 41
        with SearchClient(server.url) as anonymous:
            with pytest.raises(SearchError) as err:
                anonymous.add_images(jpeg(942))
            assert (err.value.status, err.value.code) == (401, "unauthorized")
    finally:
        stop_server(server)


def make_ivf(index) -> None:
    """Save the collection's vectors as an IVF index, as a build does above EXACT_LIMIT images."""
    from indexer.vectors import META_FILE, VectorIndex

    meta = json.loads((index / META_FILE).read_text())
    with Catalog(index, readonly=True) as catalog:
        ids, codes = catalog.all_codes(meta["dimension"])
        vectors = VectorIndex.build(ids, codes, catalog.generation, exact_limit=0)  # 40 codes, 32 lists
    vectors.meta["calibration"] = meta["calibration"]
    vectors.save(index)
    assert VectorIndex.load(index, meta["generation"]).kind == "ivf-flat"


@pytest.mark.slow
def test_an_ivf_collection_counts_every_image_added_over_http(collection):
    images, index = collection
    make_ivf(index)
    server = start_server(index, images, [], extra_env={"LOOKALIKE_API_TOKEN": TOKEN})
    try:
        with requests.Session() as session:
            added = []
            for batch in range(4):  # 100 images in four writes
                seeds = range(1000 + 25 * batch, 1025 + 25 * batch)
                files = [("image", (f"n{seed}.jpg", jpeg(seed))) for seed in seeds]
                r = session.post(f"{server.url}/api/images", headers=AUTH, files=files, timeout=120)
                assert r.status_code == 201, r.text
                added += [a["id"] for a in r.json()["added"]]
                assert r.json()["images"] == 40 + len(added)
            assert len(set(added)) == 100
            assert session.get(f"{server.url}/api/health").json()["images"] == 140
            assert "lookalike_collection_images 140.0" in session.get(f"{server.url}/metrics").text
            own = session.post(f"{server.url}/api/search?k=3", files={"image": ("q.jpg", jpeg(1050))}).json()
            assert own["results"][0]["id"] == added[50] and own["images"] == 140
            png = (images / "pngs" / "img_0104.png").read_bytes()  # a saved image: lossless, its own first hit
            base_id = session.post(f"{server.url}/api/search?k=1", files={"image": ("q.png", png)}).json()[
                "results"][0]["id"]
            assert base_id not in added
            for image_id in (added[0], added[1], base_id):
                assert session.delete(f"{server.url}/api/images/{image_id}", headers=AUTH).status_code == 200
            assert session.get(f"{server.url}/api/health").json()["images"] == 137
            hits = session.get(f"{server.url}/api/search?id={added[2]}&k=136").json()["results"]
            assert len(hits) == 136 and not {added[0], added[1], base_id} & {h["id"] for h in hits}
    finally:
        stop_server(server)
    assert count(index) == 137


@pytest.mark.slow
def test_searches_of_an_ivf_collection_ask_the_saved_index_for_k_plus_the_deletions(collection, monkeypatch):
    images, index = collection
    make_ivf(index)
    app = create_app({"INDEX_DIR": str(index), "API_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"})
    client = app.test_client()
    live = app.extensions["lookalike.engine"].collection.vectors
    assert live.kind == "ivf-flat"
    asked: list[tuple[int, int]] = []  # (k asked of the live vectors, k they asked of the saved index)
    outer, inner = live.search, live.base.search

    def live_search(xq, k):
        asked.append((k, -1))
        return outer(xq, k)

    def base_search(xq, k):
        asked[-1] = (asked[-1][0], k)
        return inner(xq, k)

    monkeypatch.setattr(live, "search", live_search)
    monkeypatch.setattr(live.base, "search", base_search)
    try:
        body = {"image": [(io.BytesIO(jpeg(seed)), f"n{seed}.jpg") for seed in range(1000, 1100)]}
        added = [a["id"] for a in client.post("/api/images", headers=AUTH, data=body).get_json()["added"]]
        assert len(added) == 100 and client.get("/api/health").get_json()["images"] == 140

        def searches() -> list[tuple[int, int]]:
            asked.clear()
            assert len(search(client, jpeg(1007), k=5)) == 5
            assert len(search(client, (images / "jpegs" / "img_0001.jpg").read_bytes(), k=30)) == 30
            assert client.get(f"/api/search?id={added[3]}&k=7&offset=2").status_code == 200
            assert len(asked) >= 3 and all(base >= 0 for _, base in asked)
            return asked

        assert all(base == k for k, base in searches())  # 100 additions, no deletions: exactly k
        # Two images of the saved index: a PNG keeps its pixels, so it is its own first hit.
        base_ids = [search(client, (images / "pngs" / f"img_{seed:04d}.png").read_bytes(), k=1)[0]["id"]
                    for seed in (110, 111)]
        assert len(set(base_ids)) == 2 and not set(base_ids) & set(added)
        for image_id in (*base_ids, added[10]):
            assert client.delete(f"/api/images/{image_id}", headers=AUTH).status_code == 200
        assert client.get("/api/health").get_json()["images"] == 137
        assert all(base == k + 2 for k, base in searches())  # only the two saved images are filtered out
    finally:
        app.extensions["lookalike.engine"].close()
