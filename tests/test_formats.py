"""HEIC/HEIF, AVIF and Netpbm: decoded like every other format, indexed, searched and accepted as uploads."""
from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
import requests
from PIL import Image

from encoder.preprocess import ImageError, load_image, peek_size, thumbnail_jpeg
from indexer.catalog import Catalog
from tests.formats import (
    IPHONE_HEIC,
    avif_bomb,
    encode,
    grey16,
    heic_bomb,
    heic_understating_its_size,
    heic_with_primary_second,
    pnm_bomb,
    with_declared_size,
)
from tests.hostile import upright, with_orientation
from tests.support import TINY, make_image, run_cli, start_server, stop_server, write_images


@pytest.mark.parametrize("fmt, mode, name", [("HEIF", "RGB", "HEIF"), ("AVIF", "RGB", "AVIF"),
                                             ("PPM", "RGB", "PPM"), ("PPM", "L", "PPM"), ("PPM", "1", "PPM")])
def test_each_new_format_decodes_to_the_model_shape(fmt, mode, name):
    decoded = load_image(encode(make_image(1, 40, mode), fmt), 16, 3)
    assert decoded.format == name and (decoded.width, decoded.height) == (40, 40)
    assert decoded.pixels.shape == (16, 16, 3) and decoded.pixels.dtype == np.uint8
    reference = load_image(encode(make_image(1, 40, mode), "PNG"), 16, 3).pixels.astype(int)
    # Lossy codecs move pixels a little; a wrong channel order or a blank would move them a lot.
    assert np.abs(decoded.pixels.astype(int) - reference).mean() < 12


def test_the_real_iphone_heic_decodes_upright_with_its_primary_image():
    decoded = load_image(IPHONE_HEIC, 64, 3)
    assert decoded.format == "HEIF" and (decoded.width, decoded.height) == (1025, 900)
    assert peek_size(IPHONE_HEIC) == (1025, 900)  # the primary image; the second one is 932 x 1044
    assert decoded.pixels.std() > 20
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(IPHONE_HEIC, 128)))
    assert thumb.format == "JPEG" and thumb.size == (128, 112)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_orientation_is_honoured(fmt):
    reference = np.asarray(upright().resize((16, 16)), np.int16)
    for orientation in range(1, 9):
        pixels = load_image(with_orientation(orientation, fmt), 16, 3).pixels.astype(np.int16)
        assert np.abs(pixels - reference).mean() < 6, (fmt, orientation)  # codec noise, not a turned picture


def test_a_heic_is_read_at_its_primary_image_not_its_first():
    pixels = load_image(heic_with_primary_second((255, 0, 0), (0, 0, 255)), 8).pixels
    assert pixels[..., 2].mean() > 200 and pixels[..., 0].mean() < 50


def test_high_bit_depth_heic_and_pgm_keep_their_content():
    for data in (encode(grey16(3), "HEIF"), encode(grey16(3), "PPM")):
        pixels = load_image(data, 16, 1).pixels
        assert pixels.shape == (16, 16, 1) and pixels.max() - pixels.min() > 100  # rescaled, not clipped


BOMB = "decompression-bomb guard"


@pytest.mark.parametrize("data", [
    heic_bomb(20_000), heic_bomb(70_000), avif_bomb(15_000), avif_bomb(20_000), avif_bomb(70_000), pnm_bomb(),
    # Past MAX_IMAGE_PIXELS but under twice it: Pillow only warns, and lookalike refuses the warning too.
    heic_bomb(12_000), avif_bomb(12_000), pnm_bomb(12_000),
], ids=["heic-20k", "heic-70k", "avif-15k", "avif-20k", "avif-70k", "pnm-100k", "heic-12k", "avif-12k", "pnm-12k"])
def test_a_bomb_in_a_new_format_gets_the_same_clear_refusal(data):
    for attempt in (lambda: load_image(data, 16), lambda: peek_size(data), lambda: thumbnail_jpeg(data, 64)):
        with pytest.raises(ImageError, match=r"^image too large \(decompression-bomb guard\)"):
            attempt()


def test_a_heic_whose_picture_is_larger_than_declared_is_refused_not_a_crash():
    # libheif raises RuntimeError here, which no other codec raises: it must still come out as ImageError.
    with pytest.raises(ImageError, match="unreadable image: .*exceeds"):
        load_image(heic_understating_its_size(), 16)


@pytest.mark.parametrize("data, reason", [
    (encode(make_image(2, 64), "HEIF")[:600], "unreadable|not a recognised"),
    (encode(make_image(2, 64), "AVIF")[:600], "not a recognised"),
    (encode(make_image(2, 64), "PPM")[:2000], "unreadable"),
    (with_declared_size(encode(make_image(2, 64), "HEIF"), 0, 0), "unreadable|not a recognised"),
    (b"P6\n40 -1\n255\n" + bytes(100), "not a recognised"),
])
def test_broken_new_format_files_are_refused_with_a_reason(data, reason):
    with pytest.raises(ImageError, match=re.compile(reason)):
        load_image(data, 16)


# --- the acceptance check: indexed by the real CLI, found as their own first neighbour, accepted as uploads


@pytest.fixture(scope="module")
def phone_collection(tmp_path_factory):
    """JPEGs plus one file in each new format, indexed by `python -m indexer build` with the tiny model."""
    root = tmp_path_factory.mktemp("phone")
    images_dir, index_dir = root / "images", root / "index"
    write_images(images_dir, 16, 0, ".jpg", "jpegs")
    new = {"iphone.heic": IPHONE_HEIC.read_bytes(),
           "photo.avif": encode(make_image(201, 64), "AVIF", quality=80),
           "synthetic.heic": with_orientation(6, "HEIF"),
           "face.pgm": encode(make_image(202, 48, "L"), "PPM"),
           "plate.ppm": encode(make_image(203, 48), "PPM"),
           "mask.pbm": encode(make_image(204, 48, "1"), "PPM")}
    for name, data in new.items():
        (images_dir / "phone" / name).parent.mkdir(exist_ok=True)
        (images_dir / "phone" / name).write_bytes(data)
    proc = run_cli("indexer", "build", str(images_dir), "--index", str(index_dir), *TINY)
    return images_dir, index_dir, new, proc


@pytest.mark.slow
def test_new_formats_are_indexed_and_the_iphone_photo_is_its_own_first_neighbour(phone_collection):
    images_dir, index_dir, new, proc = phone_collection
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["indexed"] == 16 + len(new) and summary["skipped"] == 0, proc.stderr
    # One search through the CLI (each costs a TensorFlow start); the server test below searches with every file.
    out = json.loads(run_cli("indexer", "search", "--index", str(index_dir), str(images_dir / "phone" / "iphone.heic"),
                             "-k", "3").stdout)
    assert out["results"][0]["path"] == "phone/iphone.heic" and out["results"][0]["distance"] < 1e-4, out


@pytest.mark.slow
def test_the_server_accepts_each_new_format_as_a_query_and_finds_it_first(phone_collection):
    images_dir, index_dir, new, _ = phone_collection
    server = start_server(index_dir, images_dir, [])
    try:
        for name, data in new.items():
            r = requests.post(f"{server.url}/api/search?k=3", files={"image": (name, data)}, timeout=30)
            assert r.status_code == 200, (name, r.text[:300])
            assert r.json()["results"][0]["path"] == f"phone/{name}", (name, r.json())
        for name, mimetype in (("iphone.heic", "image/heic"), ("photo.avif", "image/avif")):  # raw bodies too
            raw = requests.post(f"{server.url}/api/search?k=1", data=new[name], timeout=30,
                                headers={"Content-Type": mimetype})
            assert raw.status_code == 200 and raw.json()["results"][0]["path"] == f"phone/{name}", raw.text[:300]
        image_id = raw.json()["results"][0]["id"]
        thumb = requests.get(f"{server.url}/api/images/{image_id}/thumbnail", timeout=30)
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
        for name, bomb in (("bomb.heic", heic_bomb()), ("bomb.avif", avif_bomb())):
            refused = requests.post(f"{server.url}/api/search", files={"image": (name, bomb)}, timeout=30)
            assert refused.status_code == 400 and BOMB in refused.json()["error"]["message"], refused.text
    finally:
        stop_server(server)


@pytest.mark.slow
def test_heic_and_avif_added_over_http_are_stored_under_their_own_extension(phone_collection, tmp_path):
    from search_api.app import create_app

    images_dir, index_dir = tmp_path / "images", tmp_path / "index"
    shutil.copytree(phone_collection[0], images_dir)
    shutil.copytree(phone_collection[1], index_dir)
    with Catalog(index_dir) as catalog, catalog.conn:
        catalog.set_meta("root", str(images_dir))  # the copy's own folder, where uploads are stored
    token = "test-token-0123456789abcdef"
    app = create_app({"INDEX_DIR": str(index_dir), "API_TOKEN": token, "LOG_LEVEL": "WARNING"})
    try:
        uploads = {"heic": encode(make_image(301, 64), "HEIF"), "avif": encode(make_image(302, 64), "AVIF"),
                   "pnm": encode(make_image(303, 48, "L"), "PPM")}
        response = app.test_client().post(
            "/api/images", headers={"Authorization": f"Bearer {token}"},
            data={"image": [(io.BytesIO(data), f"upload.{ext}") for ext, data in uploads.items()]})
        assert response.status_code == 201, response.get_json()
        paths = [a["path"] for a in response.get_json()["added"]]
        assert [p.rsplit(".", 1)[1] for p in paths] == list(uploads)
    finally:
        app.extensions["lookalike.engine"].close()
    # The scanner picks files by extension (one it does not know is "skipped"): the next build must find the stored
    # uploads already indexed, neither passed over nor indexed again.
    proc = run_cli("indexer", "build", str(images_dir), "--index", str(index_dir), *TINY)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["indexed"] == 0 and summary["skipped"] == 0, proc.stderr
    assert summary["images"] == 16 + len(phone_collection[2]) + len(uploads)
