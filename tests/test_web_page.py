"""The query page in a real headless Chromium (Debian's), driven by Playwright, against the real server."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = Path("/tmp/lookalike_page.png")  # kept after the run, so a person can look at the page


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, live_server) -> Page:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(live_server.url + "/")
    yield page
    context.close()


def relpath(server, path: Path) -> str:
    return path.relative_to(server.images_dir).as_posix()


def test_page_shows_the_collection(page, live_server):
    expect(page).to_have_title("lookalike")
    expect(page.locator(".collection")).to_contain_text("40 images")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#results .result")).to_have_count(0)


def test_upload_shows_results_then_click_searches_by_that_image(page, live_server, tmp_path):
    query = live_server.images[22]  # a PNG: its pixels survive, so it must be its own first hit
    page.set_input_files("#file-input", str(query))
    cards = page.locator("#results .result")
    expect(cards).to_have_count(10)
    expect(cards.first.locator(".path")).to_have_text(relpath(live_server, query))
    expect(page.locator("#status")).to_contain_text(re.compile(r"10 results in [\d.]+ ms from 40 images"))
    expect(page.locator("#query-preview")).to_be_visible()
    expect(cards.first.locator("img")).to_have_js_property("complete", True)
    assert cards.first.locator("img").evaluate("img => img.naturalWidth") > 0  # the thumbnail really loaded
    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    second = cards.nth(1)
    clicked_id = second.get_attribute("data-id")
    second.click()
    expect(page).to_have_url(re.compile(rf"#id={clicked_id}$"))
    expect(page.locator("#query-preview")).to_have_attribute("src", f"/api/images/{clicked_id}/thumbnail")
    expect(cards).to_have_count(10)
    expect(page.locator(f'#results .result[data-id="{clicked_id}"]')).to_have_count(0)  # itself left out

    page.go_back()  # the hash history: back to no id, the page stays usable
    page.reload()
    expect(page.locator("#error")).to_be_hidden()


def test_shared_link_to_an_id_searches_on_load(browser, live_server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(live_server.url + "/#id=3")
    expect(page.locator("#results .result")).to_have_count(10)
    expect(page.locator('#results .result[data-id="3"]')).to_have_count(0)
    context.close()


def test_bad_file_shows_an_error_and_the_page_keeps_working(page, live_server, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    page.set_input_files("#file-input", str(bad))
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("cannot use this image")
    expect(page.locator("#results .result")).to_have_count(0)

    page.set_input_files("#file-input", str(live_server.images[3]))
    expect(page.locator("#results .result")).to_have_count(10)
    expect(error).to_be_hidden()


def test_oversize_file_is_refused_in_the_page(page, live_server, tmp_path):
    limit = int(page.locator("body").get_attribute("data-max-upload"))
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (limit + 1))
    page.set_input_files("#file-input", str(big))
    expect(page.locator("#error")).to_contain_text("the limit is")


def test_drag_and_drop_and_k(page, live_server):
    query = live_server.images[30]
    page.select_option("#k-select", "20")
    data = list(query.read_bytes())
    transfer = page.evaluate_handle(
        """([bytes, name]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
            return dt;
        }""",
        [data, query.name],
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    cards = page.locator("#results .result")
    expect(cards).to_have_count(20)
    expect(cards.first.locator(".path")).to_have_text(relpath(live_server, query))

    page.click("#more")  # the next page of neighbours is appended
    expect(cards).to_have_count(40)  # the whole collection, each image once
    expect(page.locator("#more")).to_be_hidden()  # nothing left to load
    ids = [c.get_attribute("data-id") for c in cards.all()]
    assert len(set(ids)) == 40


def test_paste_searches_the_pasted_image(page, live_server):
    query = live_server.images[25]
    data = list(query.read_bytes())
    page.evaluate(
        """([bytes, name]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt, bubbles: true}));
        }""",
        [data, query.name],
    )
    expect(page.locator("#results .result").first.locator(".path")).to_have_text(relpath(live_server, query))
