"""The page's views — duplicates, outliers, the map, what the model sees — in headless Chromium, on the real server."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser  # headless Chromium through Playwright

SHOTS = Path("/tmp/lookalike_views")  # kept after the run, so a person can look at every view


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=name != "map")


def open_view(page: Page, live_server, hash_: str) -> None:
    page.goto(f"{live_server.url}/{hash_}")


def test_the_nav_switches_views_by_url_and_keyboard(page, live_server):
    nav = page.locator("#views a")
    expect(nav).to_have_count(4)
    expect(page.locator('#views a[aria-current="page"]')).to_have_text("Search")
    page.locator('#views a[data-view="outliers"]').focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#view=outliers$"))
    expect(page.locator("#outliers-view")).to_be_visible()
    expect(page.locator("#search-view")).to_be_hidden()
    expect(page.locator('#views a[aria-current="page"]')).to_have_text("Outliers")
    page.locator('#views a[data-view="map"]').click()
    expect(page.locator("#map-view")).to_be_visible()
    page.go_back()
    expect(page.locator("#outliers-view")).to_be_visible()
    page.go_back()
    expect(page.locator("#search-view")).to_be_visible()
    expect(page).to_have_title("lookalike")
    assert page.problems == []


def test_duplicates_view_groups_at_a_threshold_and_says_when_there_are_none(page, live_server):
    open_view(page, live_server, "#view=duplicates&threshold=0")
    status = page.locator("#duplicates-view .view-status")
    # 40 distinct images: nothing is identical to anything else.
    expect(status).to_contain_text("No near-duplicates at code distance 0")
    expect(status).to_contain_text("pixel by pixel")
    expect(page.locator("#duplicate-groups li")).to_have_count(0)
    # At any distance the pixel check keeps look-alikes apart ...
    page.fill("#threshold", "1e9")
    page.locator("#duplicates-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"#view=duplicates&threshold=1e9$"))
    expect(status).to_contain_text("No near-duplicates at code distance 1000000000")
    # ... and codes alone group them all.
    page.check("#codes-only")
    page.locator("#duplicates-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"#view=duplicates&threshold=1e9&check=none$"))
    expect(page.locator("#duplicate-groups li")).to_have_count(1)
    expect(page.locator("#duplicate-groups li h3")).to_have_text("Group 1: 40 images")
    expect(status).to_contain_text("1 group, 40 images, at code distance 1000000000 (closer than 0% of")
    expect(status).to_contain_text("look-alikes included")
    thumbs = page.locator("#duplicate-groups .thumb")
    expect(thumbs).to_have_count(40)
    expect(thumbs.first.locator("img")).to_have_js_property("complete", True)
    assert thumbs.first.locator("img").evaluate("img => img.naturalWidth") > 0
    shot(page, "duplicates")
    page.locator("#threshold-auto").click()
    expect(page).to_have_url(re.compile(r"#view=duplicates&check=none$"))
    expect(status).to_contain_text("suggested")
    page.uncheck("#codes-only")
    page.locator("#duplicates-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"#view=duplicates$"))
    expect(status).to_contain_text(re.compile(r"among \d+ candidate pairs"))  # the answer, not the working message
    page.fill("#threshold", "-1")
    page.locator("#duplicates-form button[type=submit]").click()
    expect(page.locator("#duplicates-view .view-error")).to_contain_text("must be a number of 0 or more")
    # A thumbnail is a search by that image.
    page.goto(f"{live_server.url}/#view=duplicates&threshold=1e9&check=none")
    target = page.locator("#duplicate-groups .thumb").nth(3)
    href = target.get_attribute("href")
    target.click()
    expect(page).to_have_url(re.compile(re.escape(href) + "$"))
    expect(page.locator("#search-view")).to_be_visible()
    expect(page.locator("#results .result")).to_have_count(10)
    assert page.problems == []


def test_outliers_view_shows_each_image_beside_its_reconstruction(page, live_server):
    open_view(page, live_server, "#view=outliers")
    pairs = page.locator("#outlier-list .pair")
    expect(pairs).to_have_count(40)  # every image has its error: all 40 of the collection
    expect(page.locator("#outliers-view .view-status")).to_have_text("The 40 images rebuilt worst of 40.")
    recon = pairs.first.locator("img.recon")
    expect(recon).to_have_js_property("complete", True)
    assert recon.evaluate("img => img.naturalWidth") == 16  # the model's own resolution, shown enlarged
    assert recon.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
    expect(pairs.first.locator(".caption")).to_contain_text(re.compile(r"^worse than 9\d\.\d%"))
    shot(page, "outliers")
    first = pairs.first.locator(".thumb")
    href = first.get_attribute("href")
    first.click()
    expect(page).to_have_url(re.compile(re.escape(href) + "$"))
    expect(page.locator("#results .result")).to_have_count(10)
    assert page.problems == []


def wait_for_map(page: Page) -> None:
    expect(page.locator("#map-view")).to_have_attribute("data-ready", "true")


def drawn_pixels(page: Page) -> int:
    return page.evaluate("""() => {
        const c = document.getElementById('map-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;
    }""")


def point_on_screen(page: Page, index: int) -> tuple[float, float]:
    """Where point `index` of the map is drawn, in page coordinates (the page's own transform, so the test can aim)."""
    return page.evaluate("""(i) => {
        const c = document.getElementById('map-canvas');
        const r = c.getBoundingClientRect();
        const ratio = window.devicePixelRatio || 1;
        return window.LookalikeViews.mapPoint(i).map((v, k) => v / ratio + (k ? r.top : r.left));
    }""", index)


def test_map_view_pans_zooms_hovers_and_clicks(page, live_server):
    open_view(page, live_server, "#view=map")
    wait_for_map(page)
    expect(page.locator("#map-view .view-status")).to_have_text(
        "40 images, placed by PCA of their codes, coloured by top-level folder.")
    expect(page.locator("#map-legend li")).to_have_text(["jpegs (20)", "pngs (20)"])
    before = drawn_pixels(page)
    assert before > 40 * 4  # forty dots, each a few pixels square
    x, y = point_on_screen(page, 0)
    page.mouse.move(x, y)
    tip = page.locator("#map-tip")
    expect(tip).to_be_visible()
    expect(tip.locator("img")).to_have_js_property("complete", True)
    ids = page.evaluate("() => window.LookalikeViews.mapIds()")
    expect(tip.locator("figcaption")).to_contain_text(f"image {ids[0]}")
    shot(page, "map")
    # Keyboard: zoom in moves the dots apart (more of them leave the canvas or spread out), 0 resets.
    page.locator("#map-canvas").focus()
    page.keyboard.press("+")
    page.keyboard.press("+")
    page.wait_for_timeout(100)
    zoomed = point_on_screen(page, 0)
    page.keyboard.press("0")
    page.wait_for_timeout(100)
    assert point_on_screen(page, 0) == pytest.approx((x, y), abs=1)
    assert zoomed != pytest.approx((x, y), abs=1) or (x, y) == pytest.approx(page.evaluate(
        "() => { const r = document.getElementById('map-canvas').getBoundingClientRect(); "
        "return [r.left + r.width / 2, r.top + r.height / 2]; }"), abs=2)
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(100)
    assert point_on_screen(page, 0)[0] < x  # the view moved right: the dots moved left
    page.keyboard.press("0")
    page.wait_for_timeout(100)
    # A drag pans; a click on a dot searches by that image.
    page.mouse.move(x + 200, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 20, steps=5)
    page.mouse.up()
    page.wait_for_timeout(100)
    assert point_on_screen(page, 0)[0] == pytest.approx(x - 50, abs=3)
    page.keyboard.press("0")
    page.wait_for_timeout(100)
    page.mouse.click(*point_on_screen(page, 0))
    expect(page).to_have_url(re.compile(rf"#id={ids[0]}$"))
    expect(page.locator("#results .result")).to_have_count(10)
    assert page.problems == []


def test_the_map_stays_usable_at_100000_points(page, live_server):
    n = 100_000
    rng = np.random.default_rng(0)
    body = {"method": "pca", "generation": 1, "images": n, "ids": list(range(1, n + 1)),
            "x": np.round(rng.random(n), 5).tolist(), "y": np.round(rng.random(n), 5).tolist(),
            "group": rng.integers(0, 30, n).tolist(), "groups": [f"folder{i}" for i in range(30)]}
    page.route("**/api/map*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                          body=json.dumps(body)))
    # The mocked ids are not in the served collection: their thumbnails are one JPEG, so that hovering a dot shows
    # a picture rather than racing a 404 into the console.
    thumbnail = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(thumbnail, "JPEG")
    page.route(re.compile(r".*/api/images/\d+/thumbnail$"),
               lambda route: route.fulfill(status=200, content_type="image/jpeg", body=thumbnail.getvalue()))
    open_view(page, live_server, "#view=map")
    wait_for_map(page)
    expect(page.locator("#map-view .view-status")).to_contain_text("100,000 images")
    assert drawn_pixels(page) > 100_000  # the canvas is covered with dots
    # Frames while zooming: the page measures its own draw time; recorded for the report, bounded generously.
    took = page.evaluate("""() => new Promise((done) => {
        const c = document.getElementById('map-canvas');
        const t0 = performance.now();
        for (let i = 0; i < 5; i++) {
            c.dispatchEvent(new WheelEvent('wheel', {deltaY: -100, clientX: 300, clientY: 300}));
        }
        requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
    })""")
    print(f"100,000 points: five zoom steps drawn in {took:.0f} ms")
    page.locator("#map-canvas").focus()
    page.keyboard.press("0")  # back to the whole map, where every point is on the canvas
    page.wait_for_timeout(100)
    x, y = point_on_screen(page, 12345)
    page.mouse.move(x, y)
    expect(page.locator("#map-tip")).to_be_visible()
    expect(page.locator("#map-tip figcaption")).to_contain_text("image 12346")
    page.wait_for_function("() => { const i = document.querySelector('#map-tip img'); "
                           "return i.complete && i.naturalWidth > 0; }")
    assert page.problems == []


def test_what_the_model_sees_beside_results_and_the_query(page, live_server):
    query = live_server.images[22]
    page.set_input_files("#file-input", str(query))
    cards = page.locator("#results .result")
    expect(cards).to_have_count(10)
    expect(cards.first.locator(".percentile")).to_have_text(re.compile(r"^pctl \d{1,3}$"))
    expect(cards.first.locator(".recon")).to_be_hidden()
    page.check("#show-recon")
    recon = cards.first.locator(".recon")
    expect(recon).to_be_visible()
    expect(recon).to_have_js_property("complete", True)
    assert recon.evaluate("img => img.naturalWidth") == 16
    expect(page.locator("#query-recon")).to_be_visible()  # the uploaded query, rebuilt by the model
    expect(page.locator("#query-recon")).to_have_attribute("src", re.compile(r"^blob:"))
    shot(page, "search-with-reconstructions")
    second = cards.nth(1)
    clicked = second.get_attribute("data-id")
    second.click()
    expect(page.locator("#query-recon")).to_have_attribute("src", f"/api/images/{clicked}/reconstruction")
    expect(cards.first.locator(".recon")).to_be_visible()  # new cards keep the choice
    page.uncheck("#show-recon")
    expect(cards.first.locator(".recon")).to_be_hidden()
    expect(page.locator("#query-recon")).to_be_hidden()
    assert page.problems == []


@pytest.mark.parametrize("view", ["duplicates&threshold=1e9&check=none", "outliers", "map"])
def test_every_view_fits_a_phone(browser, live_server, view):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/#view={view}")
    name = view.split("&")[0]
    expect(page.locator(f"#{name}-view .view-status")).not_to_have_text("")
    page.wait_for_timeout(300)
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= 390  # nothing wider than the screen
    shot(page, f"{name}-phone")
    context.close()


def test_views_say_so_when_a_collection_is_too_small_or_a_request_fails(page, live_server):
    one = {"threshold": 0.0, "threshold_percentile": 50.0, "suggested_threshold": 0.0, "groups_total": 0,
           "images_in_groups": 0, "groups": [], "images": 1}
    page.route("**/api/duplicates*", lambda r: r.fulfill(status=200, content_type="application/json",
                                                         body=json.dumps(one)))
    page.route("**/api/map*", lambda r: r.fulfill(status=200, content_type="application/json", body=json.dumps(
        {"method": "pca", "generation": 1, "images": 1, "ids": [1], "x": [0.0], "y": [0.0], "group": [0],
         "groups": [""]})))
    envelope = {"error": {"status": 503, "code": "internal_error", "message": "the server is restarting"}}
    page.route("**/api/outliers*", lambda r: r.fulfill(status=503, content_type="application/json",
                                                       body=json.dumps(envelope)))
    open_view(page, live_server, "#view=duplicates")
    expect(page.locator("#duplicates-view .view-status")).to_have_text(
        "The collection needs at least two images to have duplicates.")
    page.locator('#views a[data-view="map"]').click()
    expect(page.locator("#map-view .view-status")).to_have_text("The collection needs at least two images for a map.")
    page.locator('#views a[data-view="outliers"]').click()
    expect(page.locator("#outliers-view .view-error")).to_have_text("the server is restarting")
    expect(page.locator("#outliers-view .view-error")).to_be_visible()
    # Failed loads are retried when the view is opened again, not remembered as done.
    page.unroute("**/api/outliers*")
    page.locator('#views a[data-view="search"]').click()
    page.locator('#views a[data-view="outliers"]').click()
    expect(page.locator("#outlier-list .pair")).to_have_count(40)
    expect(page.locator("#outliers-view .view-error")).to_be_hidden()
