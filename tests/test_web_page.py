"""The query page in a real headless Chromium (Debian's), driven by Playwright, against the real server.

Chromium is required, not optional: CI installs it, so a missing /usr/bin/chromium fails these tests.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser  # headless Chromium through Playwright

SCREENSHOT = Path("/tmp/lookalike_page.png")  # kept after the run, so a person can look at the page

# Put a file into a DataTransfer in the page, as a drop or a paste from the clipboard delivers it.
MAKE_TRANSFER = """([bytes, name, type]) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], name, {type}));
    return dt;
}"""


def relpath(server, path: Path) -> str:
    return path.relative_to(server.images_dir).as_posix()


def drop(page: Page, data: bytes, name: str, type_: str = "image/png") -> None:
    """Drop a file on the drop zone, as a user dragging it from the desktop does."""
    transfer = page.evaluate_handle(MAKE_TRANSFER, [list(data), name, type_])
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


def cards(page: Page):
    return page.locator("#results .result")


def test_page_shows_the_collection_and_loads_nothing_from_elsewhere(browser, live_server):
    context = browser.new_context()
    page = context.new_page()
    outside = []
    page.on("request", lambda r: r.url.startswith(live_server.url) or outside.append(r.url))
    response = page.goto(live_server.url + "/")
    assert "default-src 'none'" in response.headers["content-security-policy"]  # nothing from other sites

    expect(page).to_have_title("lookalike")
    expect(page.locator("header")).to_contain_text("40 images")
    expect(page.locator("header code")).to_have_text(re.compile(r"^sha256:[0-9a-f]{8}$"))
    expect(page.locator("#k-select")).to_have_value("10")
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#unusual-notice")).to_be_hidden()
    expect(cards(page)).to_have_count(0)
    # The stylesheet and the script arrived: the real input is visually hidden, its label is the visible button.
    expect(page.locator("label[for=file-input]")).to_be_visible()
    assert page.locator("#file-input").bounding_box()["width"] <= 1
    assert outside == [] or all(u.startswith(("data:", "blob:")) for u in outside)
    context.close()


def test_upload_then_click_results_then_back(page, live_server, tmp_path):
    query = live_server.images[22]  # a PNG: its pixels survive, so it must be its own first hit
    page.set_input_files("#file-input", str(query))
    expect(cards(page)).to_have_count(10)
    expect(cards(page).first.locator(".path")).to_have_text(relpath(live_server, query))
    expect(cards(page).first.locator(".path")).to_have_attribute("title", relpath(live_server, query))
    expect(cards(page).first.locator(".score")).to_have_text("100%")
    expect(page.locator("#status")).to_have_text(re.compile(r"^10 results in [\d.]+ ms from 40 images$"))
    expect(page.locator("#query-preview")).to_be_visible()
    expect(page.locator("#query-caption")).to_contain_text(query.name)
    expect(page.locator("#unusual-notice")).to_be_hidden()  # an indexed image is as usual as they come
    first_img = cards(page).first.locator("img:not(.recon)")
    expect(first_img).to_have_attribute("loading", "lazy")
    expect(first_img).to_have_js_property("complete", True)
    assert first_img.evaluate("img => img.naturalWidth") > 0  # the thumbnail really loaded
    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Click a result: its neighbours, itself left out, and a hash to share.
    second = cards(page).nth(1)
    clicked = second.get_attribute("data-id")
    second.click()
    expect(page).to_have_url(re.compile(rf"#id={clicked}$"))
    expect(page.locator("#query-preview")).to_have_attribute("src", f"/api/images/{clicked}/thumbnail")
    expect(page.locator("#query-caption a")).to_have_attribute("href", f"/api/images/{clicked}")
    expect(cards(page)).to_have_count(10)
    expect(page.locator(f'#results .result[data-id="{clicked}"]')).to_have_count(0)
    expect(page.locator("#unusual-notice")).to_be_hidden()  # a search by id has no query to judge

    # Keyboard: a card is a link; Enter follows it, and the focus lands on the first new card.
    target = cards(page).first
    keyed = target.get_attribute("data-id")
    target.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"#id={keyed}$"))
    expect(page.locator(f'#results .result[data-id="{keyed}"]')).to_have_count(0)
    expect(cards(page)).to_have_count(10)
    expect(cards(page).first).to_be_focused()

    # Back walks the same way home: the clicked image, then the uploaded file again.
    page.go_back()
    expect(page).to_have_url(re.compile(rf"#id={clicked}$"))
    expect(page.locator("#query-preview")).to_have_attribute("src", f"/api/images/{clicked}/thumbnail")
    expect(page.locator(f'#results .result[data-id="{clicked}"]')).to_have_count(0)
    expect(page.locator(f'#results .result[data-id="{keyed}"]')).to_have_count(1)
    page.go_back()
    expect(page).to_have_url(live_server.url + "/")
    expect(cards(page).first.locator(".path")).to_have_text(relpath(live_server, query))
    expect(page.locator("#query-preview")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator("#error")).to_be_hidden()
    assert page.problems == []


def test_shared_link_to_an_id_searches_on_load(browser, live_server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(live_server.url + "/#id=3&k=20")
    expect(cards(page)).to_have_count(20)
    expect(page.locator("#k-select")).to_have_value("20")
    expect(page.locator('#results .result[data-id="3"]')).to_have_count(0)
    expect(page.locator("#query-preview")).to_have_attribute("src", "/api/images/3/thumbnail")

    page.select_option("#k-select", "50")  # fewer images than that: all the others, and the link keeps k
    expect(page).to_have_url(re.compile(r"#id=3&k=50$"))
    expect(cards(page)).to_have_count(39)
    expect(page.locator("#more")).to_be_hidden()

    page.goto(live_server.url + "/#id=99999")  # an id the collection does not have
    expect(page.locator("#error")).to_contain_text("no image with id 99999", ignore_case=True)
    expect(cards(page)).to_have_count(0)
    page.goto(live_server.url + "/#id=abc")
    expect(page.locator("#error")).to_contain_text("not an image id")
    context.close()


def test_bad_file_shows_an_error_and_the_page_keeps_working(page, live_server, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    page.set_input_files("#file-input", str(bad))
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("cannot use this image", ignore_case=True)
    expect(cards(page)).to_have_count(0)
    expect(page.locator("#query-preview")).to_be_hidden()  # no broken-image icon

    page.set_input_files("#file-input", str(live_server.images[3]))
    expect(cards(page)).to_have_count(10)
    expect(error).to_be_hidden()
    expect(page.locator("#query-preview")).to_be_visible()


def test_files_the_server_would_refuse_are_refused_in_the_page(page, live_server, tmp_path):
    sent = []
    page.on("request", lambda r: "/api/search" in r.url and sent.append(r.url))
    limit = int(page.locator("body").get_attribute("data-max-upload"))
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:  # sparse: the size is what matters
        f.truncate(limit + 1)
    page.set_input_files("#file-input", str(big))
    expect(page.locator("#error")).to_contain_text(f"big.jpg is just over the {limit / 1e6:g} MB limit")
    with big.open("wb") as f:
        f.truncate(limit * 2)
    page.set_input_files("#file-input", str(big))
    expect(page.locator("#error")).to_contain_text(f"big.jpg is {2 * limit / 1e6:g} MB; the limit is")

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    page.set_input_files("#file-input", str(text))
    expect(page.locator("#error")).to_contain_text("notes.txt is not an image (text/plain)")
    assert sent == []


def test_server_and_network_failures_read_well(page, live_server):
    query = live_server.images[5]
    failures = [
        (lambda route: route.abort(), "Could not reach the server"),
        (lambda route: route.fulfill(status=413, content_type="text/plain", body="Request Entity Too Large"),
         "larger than the server accepts"),
        (lambda route: route.fulfill(status=502, content_type="text/html", body="<h1>Bad gateway</h1>"),
         "The server answered 502"),
    ]
    for handler, message in failures:
        page.route("**/api/search**", handler)
        page.set_input_files("#file-input", str(query))
        expect(page.locator("#error")).to_contain_text(message)
        expect(cards(page)).to_have_count(0)
        expect(page.locator("body")).not_to_have_class("busy")
        page.unroute("**/api/search**")
    page.set_input_files("#file-input", str(query))
    expect(cards(page)).to_have_count(10)
    expect(page.locator("#error")).to_be_hidden()


def test_loading_state_while_waiting(page, live_server):
    held = []
    page.route("**/api/search**", lambda route: held.append(route))  # hold the request until the test lets it go
    page.set_input_files("#file-input", str(live_server.images[7]))
    expect(page.locator("#results")).to_have_attribute("aria-busy", "true")
    expect(page.locator("#status")).to_have_text("Searching…")
    expect(page.locator("body")).to_have_class("busy")
    assert len(held) == 1
    held[0].continue_()
    expect(cards(page)).to_have_count(10)
    expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#status")).to_contain_text("10 results")


def test_drag_and_drop_k_and_load_more(page, live_server):
    query = live_server.images[30]
    page.select_option("#k-select", "20")
    drop(page, query.read_bytes(), query.name)
    expect(cards(page)).to_have_count(20)
    expect(cards(page).first.locator(".path")).to_have_text(relpath(live_server, query))
    expect(page).to_have_url(live_server.url + "/")  # a file has no address to share

    page.click("#more")  # the next page of neighbours is appended
    expect(cards(page)).to_have_count(40)  # the whole collection, each image once
    expect(page.locator("#more")).to_be_hidden()  # nothing left to load
    expect(page.locator("#status")).to_contain_text("40 results")
    ids = [c.get_attribute("data-id") for c in cards(page).all()]
    assert len(set(ids)) == 40

    page.select_option("#k-select", "10")  # a new k searches the same image again
    expect(cards(page)).to_have_count(10)
    expect(cards(page).first.locator(".path")).to_have_text(relpath(live_server, query))


def test_dragging_a_result_in_searches_by_it(page, live_server):
    transfer = page.evaluate_handle(
        "url => { const dt = new DataTransfer(); dt.setData('text/uri-list', url); return dt; }",
        live_server.url + "/api/images/5/thumbnail")
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    expect(page).to_have_url(re.compile(r"#id=5$"))
    expect(cards(page)).to_have_count(10)
    expect(page.locator('#results .result[data-id="5"]')).to_have_count(0)


def test_paste_searches_the_pasted_image(page, live_server):
    query = live_server.images[25]
    page.evaluate(
        """([bytes, name]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt, bubbles: true}));
        }""",
        [list(query.read_bytes()), "image.png"],  # the name Chrome gives a pasted screenshot
    )
    expect(cards(page).first.locator(".path")).to_have_text(relpath(live_server, query))
    expect(page.locator("#query-caption")).to_contain_text("Pasted image")


def test_an_image_unlike_the_collection_gets_a_notice(page, live_server):
    # A blank white page, nothing like the colourful shapes: the tiny model rebuilds it worse than every indexed
    # image. (Random noise would not do: shrunk to the model's 16 pixels it averages out to an easy grey.)
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), "white").save(buffer, "PNG")
    drop(page, buffer.getvalue(), "blank.png")
    notice = page.locator("#unusual-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("unlike your collection")
    expect(notice).to_contain_text("worse than your images of the same complexity")  # the signal that fired
    expect(cards(page)).to_have_count(10)  # still answered: the neighbours are shown, with the warning

    drop(page, live_server.images[1].read_bytes(), live_server.images[1].name, "image/jpeg")
    expect(cards(page).first.locator(".path")).to_have_text(relpath(live_server, live_server.images[1]))
    expect(notice).to_be_hidden()


def test_small_screen_has_no_sideways_scroll(browser, live_server, tmp_path):
    context = browser.new_context(viewport={"width": 360, "height": 740}, color_scheme="dark")
    page = context.new_page()
    page.goto(live_server.url + "/#id=1")
    expect(cards(page)).to_have_count(10)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.screenshot(path=str(tmp_path / "small_dark.png"))
    context.close()
