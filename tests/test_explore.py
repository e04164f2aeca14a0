"""Near-duplicates, outliers, reconstructions and the map: from the CLI, the API and the Python client."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from indexer.duplicates import MATCH_THRESHOLD
from search_api.app import create_app
from search_api.client import SearchClient, SearchError
from tests.support import TINY, make_image, run_cli, write_images

pytestmark = pytest.mark.slow  # the module's collection trains a model


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """30 distinct images in two folders, plus three copies of img_0003: byte-identical, resized, re-encoded."""
    root = tmp_path_factory.mktemp("copies")
    images, index = root / "images", root / "index"
    write_images(images, 15, 0, ".jpg", "a")
    write_images(images, 15, 100, ".jpg", "b")
    original = images / "a" / "img_0003.jpg"
    (images / "copies").mkdir()
    shutil.copy(original, images / "copies" / "same-bytes.jpg")
    with Image.open(original) as im:
        im.resize((im.width // 2, im.height // 2)).save(images / "copies" / "half-size.png")
        im.save(images / "copies" / "recompressed.jpg", quality=60)
    run_cli("indexer", "build", str(images), "--index", str(index), *TINY)
    return images, index


@pytest.fixture(scope="module")
def client(copies):
    app = create_app({"INDEX_DIR": str(copies[1]), "TESTING": True})
    yield app.test_client()
    app.extensions["lookalike.engine"].close()


def copy_ids(client) -> dict[str, int]:
    """path -> id of the original and its three copies."""
    hits = client.get("/api/search?id=4&k=32").get_json()["results"]  # id 4: a/img_0003.jpg, the fourth indexed
    return {"a/img_0003.jpg": 4, **{h["path"]: h["id"] for h in hits if h["path"].startswith("copies/")}}


def test_duplicates_group_the_copies_with_their_original_and_nothing_else(client):
    hits = client.get("/api/search?id=4&k=32").get_json()["results"]
    assert {h["path"] for h in hits[:3]} == {"copies/same-bytes.jpg", "copies/half-size.png",
                                             "copies/recompressed.jpg"}  # the copies are its nearest codes
    expected = sorted(["a/img_0003.jpg", "copies/same-bytes.jpg", "copies/half-size.png", "copies/recompressed.jpg"])
    # The default: candidates within the suggested code distance, confirmed pixel by pixel: the copies, nothing else.
    auto = client.get("/api/duplicates").get_json()
    assert auto["threshold"] == auto["suggested_threshold"] > 0 and 0 <= auto["threshold_percentile"] <= 100
    assert auto["check"] == "pixels" and auto["match_threshold"] == MATCH_THRESHOLD and auto["unreadable"] == 0
    assert [sorted(m["path"] for m in g["members"]) for g in auto["groups"]] == [expected]
    assert auto["pairs_checked"] >= 3 and auto["images"] == 33 and auto["groups_total"] == 1
    first = auto["groups"][0]["members"]
    assert first[0] == {"id": 4, "path": "a/img_0003.jpg", "distance": 0.0, "match": 1.0,
                        "thumbnail": "/api/images/4/thumbnail"}
    assert all(MATCH_THRESHOLD <= m["match"] <= 1.0 for m in first)
    # However far the codes may go, the pixel check keeps distinct images apart.
    wide = client.get("/api/duplicates?threshold=1e9").get_json()
    assert [sorted(m["path"] for m in g["members"]) for g in wide["groups"]] == [expected]
    assert wide["pairs_checked"] > auto["pairs_checked"] and wide["threshold_percentile"] == 0.0

    # Codes alone (check=none): components of the pairs within the distance, look-alikes included.
    reach = hits[2]["distance"] + 1e-5  # distances are given to 6 decimals
    assert reach < hits[3]["distance"]
    body = client.get(f"/api/duplicates?threshold={reach}&check=none").get_json()
    groups = [sorted(m["path"] for m in g["members"]) for g in body["groups"]]
    assert expected in groups and body["check"] == "none" and "match_threshold" not in body
    assert body["groups_total"] == len(groups)
    members = body["groups"][groups.index(expected)]["members"]
    assert members[0] == {"id": 4, "path": "a/img_0003.jpg", "distance": 0.0, "thumbnail": "/api/images/4/thumbnail"}
    assert all(m["distance"] <= reach for m in members)  # every member within reach of the group's first image
    codes_auto = client.get("/api/duplicates?check=none").get_json()
    assert codes_auto["threshold"] == codes_auto["suggested_threshold"] >= 0
    assert any({"a/img_0003.jpg", "copies/same-bytes.jpg"} <= {m["path"] for m in g["members"]}
               for g in codes_auto["groups"])
    # A threshold of 0 keeps only byte-identical copies (identical codes); a huge one, everything in one group.
    exact = client.get("/api/duplicates?threshold=0&check=none").get_json()
    assert [sorted(m["path"] for m in g["members"]) for g in exact["groups"]] == [
        ["a/img_0003.jpg", "copies/same-bytes.jpg"]]
    everything = client.get("/api/duplicates?threshold=1e9&limit=1&check=none").get_json()
    assert len(everything["groups"]) == 1 and len(everything["groups"][0]["members"]) == 33
    assert everything["threshold_percentile"] == 0.0


@pytest.mark.parametrize("query", ["threshold=-1", "threshold=nan", "threshold=inf", "threshold=x", "limit=0",
                                   "threshold=" + "9" * 50, "check=sketch", "check=" + "x" * 500])
def test_bad_duplicate_parameters_are_400s(client, query):
    response = client.get(f"/api/duplicates?{query}")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter"


def test_outliers_rank_every_image_by_reconstruction_error(client):
    body = client.get("/api/outliers?n=5").get_json()
    errors = [r["reconstruction_error"] for r in body["results"]]
    assert len(errors) == 5 and errors == sorted(errors, reverse=True) and errors[0] > 0
    assert body["measured"] == body["images"] == 33  # every image has its error, not a sample
    percentiles = [r["error_percentile"] for r in body["results"]]
    assert percentiles[0] == pytest.approx(100 * 32 / 33, abs=0.01) and percentiles == sorted(percentiles, reverse=True)
    assert body["results"][0]["reconstruction"].endswith("/reconstruction")
    assert len(client.get("/api/outliers?n=1000").get_json()["results"]) == 33
    assert client.get("/api/outliers?n=0").status_code == 400


def test_reconstructions_are_pngs_at_the_model_size(client, copies):
    some = client.get("/api/outliers?n=1").get_json()["results"][0]
    served = client.get(some["reconstruction"])
    assert served.status_code == 200 and served.mimetype == "image/png"
    with Image.open(io.BytesIO(served.data)) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
        rebuilt = np.asarray(im, np.float32) / 255.0
    # What the model makes of it is close to the image: its error is the one the catalogue measured.
    from encoder.preprocess import load_image

    pixels = load_image(copies[0] / some["path"], 16, 3).pixels.astype(np.float32) / 255.0
    assert np.mean((rebuilt - pixels) ** 2) == pytest.approx(some["reconstruction_error"], rel=0.05, abs=1e-3)
    upload = io.BytesIO()
    make_image(7).save(upload, "PNG")
    posted = client.post("/api/reconstruction", data={"image": (io.BytesIO(upload.getvalue()), "q.png")})
    assert posted.status_code == 200 and posted.mimetype == "image/png"
    bad = client.post("/api/reconstruction", data={"image": (io.BytesIO(b"not an image"), "q.png")})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_image"
    assert client.get("/api/images/999999/reconstruction").status_code == 404
    assert client.get("/api/images/x1/reconstruction").get_json()["error"]["code"] == "not_found"


def test_the_map_places_every_image_once_with_its_folder(client):
    body = client.get("/api/map").get_json()
    assert body["method"] == "pca" and body["images"] == len(body["ids"]) == len(set(body["ids"])) == 33
    assert len(body["x"]) == len(body["y"]) == len(body["group"]) == 33
    assert 0 <= min(body["x"]) and max(body["x"]) == 1 and min(body["y"]) == 0
    assert body["groups"] == ["a", "b", "copies"]
    assert sorted(np.bincount(body["group"]).tolist()) == [3, 15, 15]
    # The byte-identical copy sits exactly on its original.
    paths = copy_ids(client)
    at = {i: (x, y) for i, x, y in zip(body["ids"], body["x"], body["y"])}
    assert at[paths["a/img_0003.jpg"]] == at[paths["copies/same-bytes.jpg"]]
    bad = client.get("/api/map?method=tsne")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_parameter"


def test_an_umap_map_needs_its_extra(client):
    from indexer.projection import umap_available

    response = client.get("/api/map?method=umap")
    if umap_available():
        assert response.status_code == 200 and response.get_json()["method"] == "umap"
    else:
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "unavailable"
        assert "optional extra" in response.get_json()["error"]["message"]


def test_hits_carry_a_percentile_on_the_collections_own_scale(client):
    hits = client.get("/api/search?id=4&k=32").get_json()["results"]
    percentiles = [h["percentile"] for h in hits]
    assert all(0 <= p <= 100 for p in percentiles) and percentiles == sorted(percentiles, reverse=True)
    # Its byte-identical copy is closer than (nearly) every nearest-neighbour pair; the furthest image, than none.
    assert hits[0]["path"] == "copies/same-bytes.jpg" and percentiles[0] >= 90 and percentiles[-1] == 0


def test_the_cli_lists_duplicates_and_outliers_and_draws_the_map(copies, tmp_path):
    images, index = copies
    listing = run_cli("indexer", "duplicates", "--index", str(index), "--threshold", "1e9", "--check", "none").stdout
    assert listing.startswith("1 group of near-duplicates (33 images) at distance 1e+09 (closer than 0% of")
    assert "copies/half-size.png" in listing and "copies/recompressed.jpg" in listing and "no pixel check" in listing
    checked = run_cli("indexer", "duplicates", "--index", str(index)).stdout.splitlines()
    assert checked[0].startswith("1 group of near-duplicates (4 images) at distance ")
    assert f"candidate pairs compared pixel by pixel; a copy matches at {MATCH_THRESHOLD:g} or more" in checked[1]
    assert checked[5].split()[:2] == ["0.0000", "1.000"] and checked[5].endswith("a/img_0003.jpg")
    report = json.loads(run_cli("indexer", "duplicates", "--index", str(index), "--json").stdout)
    assert {m["path"] for m in report["groups"][0]["members"]} >= {"a/img_0003.jpg", "copies/same-bytes.jpg"}
    tight = json.loads(run_cli("indexer", "duplicates", "--index", str(index), "--threshold", "0", "--json").stdout)
    assert tight["threshold"] == 0 and len(tight["groups"]) == 1
    wrong = run_cli("indexer", "duplicates", "--index", str(index), "--check", "sketch", check=False)
    assert wrong.returncode == 2 and "--check" in wrong.stderr
    bad = run_cli("indexer", "duplicates", "--index", str(index), "--threshold", "-2", check=False)
    assert bad.returncode == 2 and "--threshold" in bad.stderr and "auto" in bad.stderr.splitlines()[-1]
    worst = json.loads(run_cli("indexer", "outliers", "--index", str(index), "-n", "3", "--json").stdout)
    assert len(worst["results"]) == 3 and worst["measured"] == 33
    text = run_cli("indexer", "outliers", "--index", str(index), "-n", "3").stdout
    assert worst["results"][0]["path"] in text.splitlines()[2]
    png = tmp_path / "map.png"
    run_cli("indexer", "map", "--index", str(index), "--png", str(png))
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 800
        colours = len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0))
    assert colours > 10  # dots in several colours, a legend, a title: not a blank canvas


def test_the_client_reaches_every_view(live_server):
    with SearchClient(live_server.url) as api:
        groups = api.duplicates()
        assert groups["images"] == len(live_server.images) and "threshold_percentile" in groups
        assert groups["check"] == "pixels" and groups["groups"] == []  # distinct images: no copies
        looser = api.duplicates(threshold=1e9, check="none")
        assert looser["check"] == "none" and len(looser["groups"][0]["members"]) == len(live_server.images)
        worst = api.outliers(3)
        assert len(worst) == 3 and worst[0]["reconstruction_error"] >= worst[-1]["reconstruction_error"]
        with Image.open(io.BytesIO(api.reconstruction(worst[0]["id"]))) as im:
            assert im.format == "PNG"
        with Image.open(io.BytesIO(api.reconstruct(live_server.images[0]))) as im:
            assert im.format == "PNG"
        points = api.map()
        assert len(points["ids"]) == len(live_server.images) and set(points["groups"]) == {"jpegs", "pngs"}
        hits = api.search_by_id(worst[0]["id"], k=3)
        assert all(h.percentile is not None and 0 <= h.percentile <= 100 for h in hits)
        with pytest.raises(SearchError) as missing:
            api.reconstruction(999_999)
        assert missing.value.status == 404
