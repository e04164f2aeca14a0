"""Shared fixtures: a tiny real collection built by the real CLI, a real server on 127.0.0.1."""
from __future__ import annotations

import os

import pytest

from tests.support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    TINY,
    Collection,
    LiveServer,
    run_cli,
    start_server,
    stop_server,
    write_images,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_collection(tmp_path_factory) -> Collection:
    """40 images in two sub-folders plus a few bad files, indexed once by the real CLI."""
    root = tmp_path_factory.mktemp("collection")
    images_dir, index_dir = root / "images", root / "index"
    images = write_images(images_dir, 20, 0, ".jpg", "jpegs") + write_images(images_dir, 20, 100, ".png", "pngs")
    (images_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (images_dir / "empty.png").write_bytes(b"")
    (images_dir / "readme.txt").write_text("not an image")
    run_cli("indexer", "build", str(images_dir), "--index", str(index_dir), *TINY)
    return Collection(images_dir, index_dir, images)


@pytest.fixture(scope="session")
def live_server(tiny_collection) -> LiveServer:
    """The real service (waitress) over the tiny collection, shared by the client, API and browser tests."""
    server = start_server(tiny_collection.index_dir, tiny_collection.images_dir, tiny_collection.images)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def app(tiny_collection):
    """The Flask app over the tiny collection, for test-client checks of the error envelope."""
    from search_api.app import create_app

    return create_app({"INDEX_DIR": str(tiny_collection.index_dir), "TESTING": True})


@pytest.fixture()
def client(app):
    """Flask's test client."""
    return app.test_client()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, live_server):
    """A fresh page on the shared server's query page; `page.problems` collects console errors and exceptions."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.problems = []  # console errors (CSP violations among them) and uncaught exceptions
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.goto(live_server.url + "/")
    yield page
    context.close()
