// The page's other views: near-duplicates, outliers and the map, each at its own shareable URL (#view=NAME).
//
// app.js routes every hash change; it asks LookalikeViews.open(name) first, which shows that view and loads it
// (once per page load: the collection changes only with a rebuild or a write) and answers true, or shows the
// search view and answers false so that app.js carries on with the search the hash asks for.
"use strict";

window.LookalikeViews = (() => {
  const $ = (id) => document.getElementById(id);
  const VIEWS = ["search", "duplicates", "outliers", "map"];
  const loaded = new Map(); // view -> the params it was last loaded with
  const numbers = new Intl.NumberFormat("en-US");

  // ------------------------------------------------------------------------------------------- shared helpers

  function section(view) {
    return $(`${view}-view`);
  }

  function status(view, text) {
    section(view).querySelector(".view-status").textContent = text;
  }

  function error(view, text) {
    const box = section(view).querySelector(".view-error");
    box.textContent = text || "";
    box.hidden = !text;
  }

  /** GET a JSON API; resolves to the body, or throws an Error with a readable message. */
  async function getJson(url) {
    let response;
    try {
      response = await fetch(url, { headers: { Accept: "application/json" } });
    } catch (err) {
      throw new Error("Could not reach the server. Check that it is still running, then try again.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      // not JSON: described by its status below
    }
    if (response.ok && body) return body;
    if (body && body.error && body.error.message) throw new Error(body.error.message);
    throw new Error(`The server answered ${response.status} ${response.statusText}`.trim() + ".");
  }

  /** A thumbnail linking to a search by that image (#id=N), captioned with its path and `detail`. */
  function thumb(id, path, detail, title) {
    const link = document.createElement("a");
    link.className = "thumb";
    link.href = `#id=${id}`;
    link.title = title ? `${path}\n${title}` : path;
    link.setAttribute("aria-label", `${path}${detail ? `, ${detail}` : ""}. Search by this image.`);
    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = path;
    img.src = `/api/images/${id}/thumbnail`;
    img.addEventListener("error", () => link.classList.add("broken"), { once: true });
    const caption = document.createElement("span");
    caption.className = "caption";
    caption.textContent = detail ? `${detail} · ${path.slice(path.lastIndexOf("/") + 1)}` : path;
    link.append(img, caption);
    return link;
  }

  function params() {
    return new URLSearchParams(location.hash.replace(/^#/, ""));
  }

  // ------------------------------------------------------------------------------------------- duplicates

  /**
   * Load one view's data: remember it as loaded under `key`, say `working`, and fetch `url`. Resolves to the body,
   * or to null after showing the error and forgetting the load, so that opening the view again retries it.
   */
  async function loadView(view, key, working, url) {
    loaded.set(view, key);
    error(view, "");
    status(view, working);
    try {
      return await getJson(url);
    } catch (err) {
      loaded.delete(view);
      status(view, "");
      error(view, err.message);
      return null;
    }
  }

  /** The duplicates view's hash for a threshold ("" for the suggested one) and the codes-only choice. */
  function duplicatesHash(threshold, codesOnly) {
    const parts = ["#view=duplicates"];
    if (threshold !== "") parts.push(`threshold=${encodeURIComponent(threshold)}`);
    if (codesOnly) parts.push("check=none");
    return parts.join("&");
  }

  async function loadDuplicates() {
    const wanted = params().get("threshold") || "";
    const codesOnly = params().get("check") === "none";
    $("threshold").value = wanted;
    $("codes-only").checked = codesOnly;
    const key = `${wanted}|${codesOnly}`;
    if (loaded.get("duplicates") === key) return;
    const list = $("duplicate-groups");
    list.replaceChildren();
    const body = await loadView("duplicates", key,
      codesOnly ? "Grouping look-alikes…" : "Finding edited copies: comparing candidate pairs pixel by pixel…",
      `/api/duplicates?threshold=${encodeURIComponent(wanted || "auto")}&check=${codesOnly ? "none" : "pixels"}` +
      "&limit=200");
    if (!body) return;
    const where = `code distance ${Number(body.threshold.toPrecision(3))} (closer than ` +
      `${body.threshold_percentile}% of nearest-neighbour pairs; suggested ${Number(body.suggested_threshold.toPrecision(3))})`;
    const how = body.check === "pixels"
      ? ` — copies confirmed pixel by pixel among ${numbers.format(body.pairs_checked)} candidate pairs` +
        (body.unreadable ? ` (${numbers.format(body.unreadable)} files could not be read)` : "")
      : " — by code distance alone, look-alikes included";
    if (body.images < 2) {
      status("duplicates", "The collection needs at least two images to have duplicates.");
      return;
    }
    if (!body.groups.length) {
      status("duplicates", `No near-duplicates at ${where}${how}. Raise the distance to look further.`);
      return;
    }
    const shown = body.groups.length < body.groups_total ? `, the ${body.groups.length} largest shown` : "";
    const groupsWord = body.groups_total === 1 ? "group" : "groups";
    status("duplicates", `${numbers.format(body.groups_total)} ${groupsWord}, ${numbers.format(body.images_in_groups)} ` +
      `images, at ${where}${how}${shown}.`);
    for (const [n, group] of body.groups.entries()) {
      const item = document.createElement("li");
      const heading = document.createElement("h3");
      heading.textContent = `Group ${n + 1}: ${group.members.length} images`;
      const row = document.createElement("div");
      row.className = "strip";
      for (const [k, m] of group.members.entries()) {
        const distance = m.distance === 0 ? "d 0" : `d ${Number(m.distance.toPrecision(3))}`;
        if (k > 0 && m.match !== undefined) {
          // The match says why it is grouped: first, so that a narrow caption keeps it.
          row.append(thumb(m.id, m.path, `match ${m.match.toFixed(3)}`,
            `pixels match the group's first image at ${m.match.toFixed(3)} (1 = the same picture); ` +
            `code distance ${distance.slice(2)}`));
        } else {
          row.append(thumb(m.id, m.path, distance, "code distance to the group's first image"));
        }
      }
      item.append(heading, row);
      list.append(item);
    }
  }

  function wireDuplicates() {
    $("duplicates-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const raw = $("threshold").value.trim();
      if (raw !== "" && !(Number(raw) >= 0)) {
        error("duplicates", "The distance must be a number of 0 or more, or empty for the suggested one.");
        return;
      }
      location.hash = duplicatesHash(raw, $("codes-only").checked);
    });
    $("threshold-auto").addEventListener("click", () => {
      $("threshold").value = "";
      location.hash = duplicatesHash("", $("codes-only").checked);
    });
  }

  // ------------------------------------------------------------------------------------------- outliers

  async function loadOutliers() {
    if (loaded.has("outliers")) return;
    const list = $("outlier-list");
    const body = await loadView("outliers", "", "Finding the images the model rebuilds worst…", "/api/outliers?n=50");
    if (!body) return;
    if (!body.results.length) {
      status("outliers", body.images ? "No image of this collection has a measured reconstruction error yet; " +
        "run `python -m indexer build` again with --retrain." : "The collection is empty.");
      return;
    }
    status("outliers", `The ${body.results.length} images rebuilt worst of ${numbers.format(body.measured)}.`);
    list.replaceChildren(...body.results.map((r) => {
      const item = document.createElement("li");
      const pair = document.createElement("div");
      pair.className = "pair";
      const recon = document.createElement("img");
      recon.className = "recon";
      recon.loading = "lazy";
      recon.alt = `What the model makes of ${r.path}`;
      recon.src = r.reconstruction;
      const worse = `worse than ${r.error_percentile.toFixed(1)}%`;
      pair.append(thumb(r.id, r.path, worse, `reconstruction error ${r.reconstruction_error}`), recon);
      item.append(pair);
      return item;
    }));
  }

  // ------------------------------------------------------------------------------------------- map

  const map = {
    data: null, // the /api/map body
    colours: [],
    packed: [], // the colours as RGBA pixels
    order: null, // point indices, folder by folder: the order they are drawn in
    view: { x: 0, y: 0, scale: 1 }, // the canvas shows [x, x + 1/scale] x [y, y + 1/scale] of the unit square
    grid: null, // cell -> point indices, for hover lookups without a scan over 100,000 points
    hover: -1,
    drag: null,
    frame: 0,
  };
  const CELLS = 64;

  function palette(n) {
    // Evenly spaced hues, alternating lightness so that neighbours in the legend differ.
    return Array.from({ length: n }, (_, i) => `hsl(${Math.round((i * 360) / Math.max(n, 1)) % 360} 70% ${i % 2 ? 38 : 52}%)`);
  }

  function buildGrid(data) {
    const grid = new Map();
    for (let i = 0; i < data.ids.length; i++) {
      const key = Math.min(CELLS - 1, Math.floor(data.x[i] * CELLS)) * CELLS +
        Math.min(CELLS - 1, Math.floor(data.y[i] * CELLS));
      if (!grid.has(key)) grid.set(key, []);
      grid.get(key).push(i);
    }
    return grid;
  }

  function canvasSize() {
    const canvas = $("map-canvas");
    const rect = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(rect.width * ratio));
    const height = Math.max(1, Math.round(rect.height * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    return { canvas, width, height, ratio };
  }

  /**
   * Where the unit square lands on the canvas at the current view, keeping the aspect ratio (a margin of 3% around
   * the points): a point (x, y) is drawn at (ox + x * scale, oy - y * scale); `side` is the whole square's size.
   */
  function placement(size) {
    const side = Math.min(size.width, size.height) * 0.94;
    const scale = map.view.scale * side;
    return {
      side,
      scale,
      ox: (size.width - side) / 2 - map.view.x * scale,
      oy: (size.height - side) / 2 + side + map.view.y * scale,
    };
  }

  /** Unit-square point -> canvas pixel. */
  function toPixel(x, y, size) {
    const { scale, ox, oy } = placement(size);
    return [ox + x * scale, oy - y * scale];
  }

  function fromPixel(px, py, size) {
    const { scale, ox, oy } = placement(size);
    return [(px - ox) / scale, (oy - py) / scale];
  }

  /** A CSS colour as one little-endian RGBA pixel (what a Uint32Array over ImageData holds). */
  function packed(colour) {
    const probe = document.createElement("canvas").getContext("2d");
    probe.fillStyle = colour; // the browser normalises any opaque colour to #rrggbb
    const hex = parseInt(probe.fillStyle.slice(1), 16);
    return ((255 << 24) | ((hex & 0xff) << 16) | (hex & 0xff00) | ((hex >> 16) & 0xff)) >>> 0;
  }

  function draw() {
    map.frame = 0;
    const data = map.data;
    if (!data) return;
    const started = performance.now();
    const size = canvasSize();
    const { width, height } = size;
    const ctx = size.canvas.getContext("2d");
    const radius = Math.max(1, Math.min(4, 2.5 * Math.sqrt(map.view.scale) * size.ratio * (data.ids.length > 20000 ? 0.6 : 1)));
    // Dots are written straight into the canvas's pixels: 100,000 fillRect calls took 50-60 ms a frame in software
    // rendering; this takes a few. Points are drawn folder by folder (map.order), as the legend lists them.
    const image = ctx.createImageData(width, height);
    const pixels = new Uint32Array(image.data.buffer);
    const dot = Math.max(1, Math.round(2 * radius));
    const { scale, ox, oy } = placement(size);
    const { x: xs, y: ys, group } = data;
    for (const i of map.order) {
      const left = Math.round(ox + xs[i] * scale - dot / 2);
      const top = Math.round(oy - ys[i] * scale - dot / 2);
      if (left >= width || top >= height || left + dot <= 0 || top + dot <= 0) continue;
      const colour = map.packed[group[i]];
      const right = Math.min(width, left + dot);
      for (let y = Math.max(0, top); y < Math.min(height, top + dot); y++) {
        pixels.fill(colour, y * width + Math.max(0, left), y * width + right);
      }
    }
    ctx.putImageData(image, 0, 0);
    if (map.hover >= 0) {
      const [px, py] = toPixel(data.x[map.hover], data.y[map.hover], size);
      ctx.strokeStyle = getComputedStyle(document.body).color;
      ctx.lineWidth = 2 * size.ratio;
      ctx.strokeRect(px - radius - 3, py - radius - 3, 2 * radius + 6, 2 * radius + 6);
    }
    // The last frame's draw time, for benchmarks/map.py and anyone curious (the canvas's data-draw-ms).
    size.canvas.dataset.drawMs = (performance.now() - started).toFixed(2);
  }

  function redraw() {
    if (!map.frame) map.frame = requestAnimationFrame(draw);
  }

  /** The point nearest a canvas position (CSS pixels), within 12 pixels, or -1. */
  function pointAt(cssX, cssY) {
    const data = map.data;
    if (!data) return -1;
    const size = canvasSize();
    const px = cssX * size.ratio;
    const py = cssY * size.ratio;
    const [ux, uy] = fromPixel(px, py, size);
    const reach = (12 * size.ratio) / placement(size).scale; // in unit square
    let best = -1;
    let bestDistance = Infinity;
    const cx = Math.floor(ux * CELLS);
    const cy = Math.floor(uy * CELLS);
    const span = Math.ceil(reach * CELLS);
    for (let gx = cx - span; gx <= cx + span; gx++) {
      for (let gy = cy - span; gy <= cy + span; gy++) {
        for (const i of map.grid.get(gx * CELLS + gy) || []) {
          const d = (data.x[i] - ux) ** 2 + (data.y[i] - uy) ** 2;
          if (d < bestDistance) {
            bestDistance = d;
            best = i;
          }
        }
      }
    }
    return bestDistance <= reach * reach ? best : -1;
  }

  function showTip(i, cssX, cssY) {
    const tip = $("map-tip");
    if (i < 0) {
      tip.hidden = true;
      return;
    }
    const id = map.data.ids[i];
    const img = tip.querySelector("img");
    const src = `/api/images/${id}/thumbnail`;
    if (img.getAttribute("src") !== src) img.src = src;
    const group = map.data.groups[map.data.group[i]];
    tip.querySelector("figcaption").textContent = `${group ? group + " · " : ""}image ${id}`;
    tip.style.left = `${cssX + 16}px`;
    tip.style.top = `${cssY + 16}px`;
    tip.hidden = false;
  }

  function zoom(factor, cssX, cssY) {
    const size = canvasSize();
    const [ux, uy] = fromPixel(cssX * size.ratio, cssY * size.ratio, size);
    const scale = Math.min(512, Math.max(1, map.view.scale * factor));
    // Keep the point under the cursor where it is.
    map.view.x = ux - (ux - map.view.x) * (map.view.scale / scale);
    map.view.y = uy - (uy - map.view.y) * (map.view.scale / scale);
    map.view.scale = scale;
    if (scale === 1) map.view = { x: 0, y: 0, scale: 1 };
    redraw();
  }

  function pan(dx, dy) {
    map.view.x += dx / map.view.scale;
    map.view.y += dy / map.view.scale;
    redraw();
  }

  function wireMap() {
    const canvas = $("map-canvas");
    canvas.addEventListener("pointermove", (e) => {
      const rect = canvas.getBoundingClientRect();
      const x = e.clientX - rect.left;
      const y = e.clientY - rect.top;
      if (map.drag) {
        const size = canvasSize();
        const side = placement(size).side / size.ratio;
        pan(-(x - map.drag.x) / side, (y - map.drag.y) / side);
        map.drag = { x, y, moved: map.drag.moved || Math.abs(e.movementX) + Math.abs(e.movementY) > 2 };
        return;
      }
      const i = pointAt(x, y);
      if (i !== map.hover) {
        map.hover = i;
        redraw();
      }
      showTip(i, x, y);
    });
    canvas.addEventListener("pointerleave", () => {
      map.hover = -1;
      showTip(-1);
      redraw();
    });
    canvas.addEventListener("pointerdown", (e) => {
      const rect = canvas.getBoundingClientRect();
      map.drag = { x: e.clientX - rect.left, y: e.clientY - rect.top, moved: false };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointerup", (e) => {
      const drag = map.drag;
      map.drag = null;
      if (drag && !drag.moved) {
        const rect = canvas.getBoundingClientRect();
        const i = pointAt(e.clientX - rect.left, e.clientY - rect.top);
        if (i >= 0) location.hash = `#id=${map.data.ids[i]}`;
      }
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      zoom(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - rect.left, e.clientY - rect.top);
    }, { passive: false });
    canvas.addEventListener("keydown", (e) => {
      const rect = canvas.getBoundingClientRect();
      const step = 0.1;
      const keys = {
        "+": () => zoom(1.5, rect.width / 2, rect.height / 2),
        "=": () => zoom(1.5, rect.width / 2, rect.height / 2),
        "-": () => zoom(1 / 1.5, rect.width / 2, rect.height / 2),
        "0": () => { map.view = { x: 0, y: 0, scale: 1 }; redraw(); },
        ArrowLeft: () => pan(-step, 0),
        ArrowRight: () => pan(step, 0),
        ArrowUp: () => pan(0, step),
        ArrowDown: () => pan(0, -step),
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
    window.addEventListener("resize", redraw);
  }

  async function loadMap() {
    if (loaded.has("map")) {
      redraw();
      return;
    }
    const body = await loadView("map", "", "Laying out the collection…", "/api/map");
    if (!body) return;
    if (body.images < 2) {
      status("map", "The collection needs at least two images for a map.");
      return;
    }
    map.data = body;
    map.colours = palette(body.groups.length);
    map.packed = map.colours.map(packed);
    map.order = Uint32Array.from(body.ids.keys()).sort((a, b) => body.group[a] - body.group[b] || a - b);
    map.grid = buildGrid(body);
    const counts = body.groups.map(() => 0);
    for (const g of body.group) counts[g] += 1;
    $("map-legend").replaceChildren(...body.groups.slice(0, 24).map((name, g) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = map.colours[g];
      item.append(swatch, `${name || "(top level)"} (${numbers.format(counts[g])})`);
      return item;
    }));
    status("map", `${numbers.format(body.images)} images, placed by ${body.method.toUpperCase()} of their codes` +
      (body.groups.length > 1 ? ", coloured by top-level folder." : "."));
    draw(); // now, not at the next frame: "ready" means the dots are on the canvas
    section("map").dataset.ready = "true"; // tests and scripts can wait for this
  }

  // ------------------------------------------------------------------------------------------- switching

  function open(name) {
    const view = VIEWS.includes(name) ? name : "search";
    for (const v of VIEWS) section(v).hidden = v !== view;
    for (const link of document.querySelectorAll("#views a")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (view === "search") return false;
    document.title = `${$(`${view}-heading`).textContent} — lookalike`;
    ({ duplicates: loadDuplicates, outliers: loadOutliers, map: loadMap })[view]();
    return true;
  }

  /** Where point `i` of the map is drawn, in canvas pixels (for scripts and tests that aim at a dot). */
  function mapPoint(i) {
    return toPixel(map.data.x[i], map.data.y[i], canvasSize());
  }

  wireDuplicates();
  wireMap();
  return { open, mapPoint, mapIds: () => (map.data ? map.data.ids : []) };
})();
