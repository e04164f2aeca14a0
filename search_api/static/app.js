// The query page: pick, drop or paste an image -> POST /api/search; click a result -> GET /api/search?id=.
//
// What the grid shows is kept in `state.view` (the query, for "Load more" and a change of k). A search by id also
// lives in the URL hash (#id=17, plus &k=20 when k is not the default), so it can be shared or reloaded, and
// Back/Forward walk through the images a user clicked. A picked file has no URL: Back to it searches it again.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_UPLOAD = Number(document.body.dataset.maxUpload);
const DEFAULT_K = Number(document.body.dataset.k);
const MAX_K = 1000; // the API's limit on k, for a k that arrives in a link
// The server's limit is on the whole request body; the multipart envelope around the file takes a few hundred
// bytes, so a file a hair under the limit would still be refused with a 413. Refuse it here instead.
const MULTIPART_OVERHEAD = 1024;
const numbers = new Intl.NumberFormat("en-US"); // "1,140", like the header the server renders
const INTRO = $("empty").textContent; // the hint under the empty grid before the first search

const state = {
  view: null, // the query behind the grid: {kind: "image", file} or {kind: "id", id}
  lastImage: null, // the last picked file: Back from a search by id returns to it
  shown: 0, // cards in the grid, which is the offset of the next "Load more"
  controller: null, // AbortController of the request in flight; a newer search cancels it
  routedHash: "", // the hash the view was last built from (popstate and hashchange may both report one move)
  paths: new Map(), // id -> path of every result seen, to caption a search by id
  objectUrl: null, // the preview's blob: URL, released when the preview changes
  focusFirst: false, // move focus to the first new card once results arrive (keyboard use)
  statusBefore: "", // the status line to restore when "Load more" fails
};

// ---------------------------------------------------------------------------------------------- small helpers

function k() {
  return Number($("k-select").value);
}

/** Select `n` results per page, adding it to the choices when a link asks for an unusual k. */
function setK(n) {
  const select = $("k-select");
  if (![...select.options].some((o) => Number(o.value) === n)) {
    const option = new Option(String(n), String(n));
    const after = [...select.options].find((o) => Number(o.value) > n);
    select.add(option, after || null);
  }
  select.value = String(n);
}

function formatBytes(n) {
  if (n < 1e3) return `${n} bytes`;
  if (n < 1e6) return `${Math.round(n / 1e3)} kB`;
  return `${Number((n / 1e6).toFixed(1))} MB`;
}

function formatScore(score) {
  if (score > 0 && score < 0.005) return "<1%"; // a far neighbour still scores above zero; do not print 0%
  return `${Math.round(score * 100)}%`;
}

function formatDistance(d) {
  if (d === 0) return "0";
  return d >= 1000 ? d.toFixed(0) : d.toPrecision(3);
}

function formatMs(ms) {
  return ms < 100 ? ms.toFixed(1) : String(Math.round(ms));
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function setStatus(text, working = false) {
  $("status").textContent = text;
  $("status").classList.toggle("working", working);
}

// ---------------------------------------------------------------------------------------------- URL hash

/** {id, k} from a hash like #id=17&k=20; id null when absent, undefined when present but not an id. */
function parseHash(hash = location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const raw = params.get("id");
  const id = raw === null ? null : /^[0-9]{1,18}$/.test(raw) ? raw : undefined;
  const rawK = params.get("k") || "";
  const wanted = /^[0-9]{1,4}$/.test(rawK) ? Number(rawK) : NaN;
  return { id, raw, k: wanted >= 1 && wanted <= MAX_K ? wanted : null };
}

function hashFor(id, perPage = k()) {
  return perPage === DEFAULT_K ? `#id=${id}` : `#id=${id}&k=${perPage}`;
}

/** The id behind a URL dropped on the page: one of our own image links, or a result card's #id= link. */
function idFromUrl(text) {
  const first = (text || "").split(/\r?\n/).find((line) => line && !line.startsWith("#"));
  if (!first) return null;
  let url;
  try {
    url = new URL(first.trim(), location.href);
  } catch (err) {
    return null;
  }
  if (url.origin !== location.origin) return null;
  const byPath = /^\/api\/images\/([0-9]{1,18})(?:\/thumbnail)?$/.exec(url.pathname);
  if (byPath) return byPath[1];
  const { id } = parseHash(url.hash);
  return id || null;
}

/** Build the view the hash asks for; called on load and whenever the hash changes. */
function route() {
  if (location.hash === state.routedHash) return;
  state.routedHash = location.hash;
  const view = new URLSearchParams(location.hash.replace(/^#/, "")).get("view") || "search";
  if (window.LookalikeViews.open(view)) return; // duplicates, outliers, map (views.js); an unknown one is a search
  const { id, raw, k: linkK } = parseHash();
  if (id) {
    setK(linkK || DEFAULT_K);
    searchId(id);
  } else if (id === undefined) {
    resetView();
    showError(`This link names no image: "${raw.slice(0, 40)}" is not an image id.`);
  } else if (state.lastImage) {
    showFile(state.lastImage);
    search({ kind: "image", file: state.lastImage });
  } else {
    resetView();
  }
}

// ---------------------------------------------------------------------------------------------- the server

/**
 * fetch, with every outcome turned into {ok: true, body} or {ok: false, message} (or {aborted: true}). Errors get a
 * readable message whatever the server sent: our JSON envelope, a plain-text 413 from waitress, an HTML page from
 * a proxy, or nothing at all when the network failed.
 */
async function request(url, options) {
  let response;
  let body = null;
  try {
    response = await fetch(url, { ...options, headers: { Accept: "application/json" } });
    try {
      body = await response.json();
    } catch (err) {
      if (err.name === "AbortError") throw err;
      // not JSON: described by its status below
    }
  } catch (err) {
    if (err.name === "AbortError") return { aborted: true };
    return { ok: false, message: "Could not reach the server. Check that it is still running, then try again." };
  }
  if (response.ok && body && Array.isArray(body.results)) return { ok: true, body };
  if (body && body.error && body.error.message) return { ok: false, message: capitalise(body.error.message) };
  if (response.status === 413) {
    return { ok: false, message: `The image is larger than the server accepts (${formatBytes(MAX_UPLOAD)}).` };
  }
  if (response.ok) return { ok: false, message: "The server sent an answer this page does not understand." };
  return { ok: false, message: `The server answered ${response.status} ${response.statusText}`.trim() + "." };
}

/** Run `query`; `append` fetches the next page of the query already shown. The newest search always wins. */
async function search(query, append = false) {
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  state.view = query;
  const params = new URLSearchParams();
  if (query.kind === "id") params.set("id", query.id);
  params.set("k", String(k()));
  params.set("offset", String(append ? state.shown : 0));
  const options = { signal: controller.signal };
  if (query.kind === "image") {
    const form = new FormData();
    form.append("image", query.file, query.file.name || "pasted-image");
    Object.assign(options, { method: "POST", body: form });
  }

  showError("");
  setBusy(true, append);
  const answer = await request(`/api/search?${params}`, options);
  if (controller !== state.controller) return; // a newer search took over, and owns the busy state now
  state.controller = null;
  setBusy(false, append);
  if (answer.aborted) return;
  if (!answer.ok) {
    state.focusFirst = false;
    showError(answer.message);
    if (!append) clearResults();
    return;
  }
  render(answer.body, append);
  if (!append) showQueryRecon();
}

function setBusy(on, append) {
  document.body.classList.toggle("busy", on);
  $("results").setAttribute("aria-busy", String(on));
  $("more").disabled = on;
  if (on) {
    // A search that replaces one in flight must not take "Searching…" for the line to restore.
    if (!$("status").classList.contains("working")) state.statusBefore = $("status").textContent;
    setStatus(append ? "Loading more…" : "Searching…", true);
  } else {
    setStatus(state.statusBefore); // replaced by render on success
  }
}

// ---------------------------------------------------------------------------------------------- showing things

function render(body, append) {
  const grid = $("results");
  const moreHadFocus = document.activeElement === $("more");
  if (!append) {
    grid.replaceChildren();
    state.shown = 0;
  }
  const cards = body.results.map(card);
  grid.append(...cards);
  state.shown += cards.length;

  // Search by id leaves the image itself out: it has one neighbour fewer than the collection has images.
  const most = state.view.kind === "id" ? body.images - 1 : body.images;
  const more = $("more");
  more.hidden = body.results.length < body.k || state.shown >= most;
  more.textContent = `Load ${numbers.format(Math.min(body.k, most - state.shown))} more`;

  const count = state.shown === 1 ? "1 result" : `${numbers.format(state.shown)} results`;
  const status = `${count} in ${formatMs(body.took_ms)} ms from ${numbers.format(body.images)} images`;
  state.statusBefore = status;
  setStatus(status);

  const empty = $("empty");
  empty.hidden = state.shown > 0;
  empty.textContent = state.view.kind === "id" ? "No other images in the collection." : "The collection is empty.";

  if (!append) showUnusual(body.query);
  // Keyboard users keep their place: on the first new card after "Load more" or after opening a result.
  if (cards.length && ((append && moreHadFocus) || state.focusFirst)) cards[0].querySelector("a").focus();
  state.focusFirst = false;
}

/** A result card: a link to #id=N, so Enter, middle-click and "copy link" all do what a user expects. */
function card(hit) {
  const item = $("result-template").content.firstElementChild.cloneNode(true);
  const link = item.querySelector(".result");
  const id = String(hit.id);
  state.paths.set(id, hit.path);
  link.dataset.id = id;
  link.href = hashFor(id);
  const score = formatScore(hit.score);
  const distance = formatDistance(hit.distance);
  const copy = hit.copy ? " An edited copy of your image." : "";
  link.setAttribute("aria-label", `${hit.path}: ${score} similar, distance ${distance}.${copy} Search by this image.`);
  link.querySelector(".copy").hidden = !hit.copy;

  const img = link.querySelector("img");
  img.alt = hit.path;
  img.addEventListener("error", () => link.classList.add("broken"), { once: true });
  img.src = hit.thumbnail;

  link.querySelector(".score").textContent = score;
  link.querySelector(".distance").textContent = `d ${distance}`;
  if (typeof hit.percentile === "number") {
    link.querySelector(".percentile").textContent = `pctl ${Math.floor(hit.percentile)}`;
  }
  const recon = link.querySelector(".recon");
  recon.alt = `What the model makes of ${hit.path}`;
  recon.dataset.src = `/api/images/${id}/reconstruction`;
  if ($("show-recon").checked) showRecon(recon);
  const cut = hit.path.lastIndexOf("/") + 1;
  const path = link.querySelector(".path");
  path.title = hit.path;
  path.querySelector(".dir").textContent = hit.path.slice(0, cut);
  path.querySelector(".name").textContent = hit.path.slice(cut);
  return item;
}

/** Load and show a reconstruction image whose URL waits in data-src. */
function showRecon(img) {
  if (img.dataset.src && img.getAttribute("src") !== img.dataset.src) img.src = img.dataset.src;
  img.hidden = false;
}

/** What the model makes of the query: by id from the server's file, a picked file by uploading it. */
async function showQueryRecon() {
  const img = $("query-recon");
  const view = state.view;
  if (!$("show-recon").checked || !view) {
    img.hidden = true;
    return;
  }
  if (view.kind === "id") {
    img.src = `/api/images/${view.id}/reconstruction`;
  } else {
    const form = new FormData();
    form.append("image", view.file, view.file.name || "query");
    try {
      const response = await fetch("/api/reconstruction", { method: "POST", body: form });
      if (!response.ok || state.view !== view) return;
      if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
      img.dataset.objectUrl = URL.createObjectURL(await response.blob());
      img.src = img.dataset.objectUrl;
    } catch (err) {
      return; // the search itself reports an unreachable server
    }
  }
  img.hidden = false;
}

/** Why a query is unlike the collection, one phrase per signal that fired (see encoder/novelty.py). */
const UNUSUAL_REASONS = {
  reconstruction: "the model rebuilds it worse than your images of the same complexity",
  code: "its code lies far from your collection's codes",
  error: "the model rebuilds it worse than almost every indexed image",
};

function showUnusual(query) {
  const notice = $("unusual-notice");
  const unusual = Boolean(query && query.unusual);
  notice.hidden = !unusual;
  if (!unusual) {
    notice.textContent = "";
    notice.title = "";
    return;
  }
  const reasons = (query.reasons || []).map((r) => UNUSUAL_REASONS[r] || r);
  notice.textContent = `This image is unlike your collection (${reasons.join("; ")}) — ` +
    "its neighbours may be loose matches.";
  const signals = Object.entries(query.signals || {}).map(([name, p]) => `${name} ${p}th percentile`);
  notice.title = [`reconstruction error ${query.reconstruction_error}`, ...signals].join(", ");
}

/** The query image and a caption (a name, then `detail` on a line of its own); `id` adds a link to the original. */
function showQuery(src, caption, detail = "", id = null) {
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = src.startsWith("blob:") ? src : null;
  const img = $("query-preview");
  img.hidden = false;
  img.alt = `Query: ${caption}`;
  img.src = src;
  const figcaption = $("query-caption");
  const text = document.createElement("span");
  text.className = "caption-text";
  text.textContent = caption;
  text.title = caption;
  figcaption.replaceChildren(text);
  if (detail) {
    const more = document.createElement("span");
    more.textContent = detail;
    figcaption.append(more);
  }
  if (id !== null) {
    const open = document.createElement("a");
    open.href = `/api/images/${id}`;
    open.target = "_blank";
    open.rel = "noopener";
    open.textContent = "Open original";
    figcaption.append(open);
  }
  $("query-figure").hidden = false;
  $("drop-zone").classList.add("has-image");
}

function showFile(file) {
  const name = file.name && file.name !== "image.png" ? file.name : "Pasted image"; // Chrome names pastes image.png
  showQuery(URL.createObjectURL(file), name, formatBytes(file.size));
  document.title = `${name} — lookalike`;
}

function clearResults() {
  state.view = null;
  state.shown = 0;
  state.statusBefore = "";
  $("results").replaceChildren();
  $("more").hidden = true;
  $("empty").hidden = true;
  setStatus("");
  showUnusual(null);
}

function resetView() {
  if (state.controller) state.controller.abort();
  state.controller = null;
  setBusy(false);
  clearResults();
  showError("");
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = null;
  $("query-figure").hidden = true;
  $("query-preview").removeAttribute("src");
  $("drop-zone").classList.remove("has-image");
  $("empty").textContent = INTRO;
  $("empty").hidden = false;
  document.title = "lookalike";
}

// ---------------------------------------------------------------------------------------------- the two searches

/** Why `file` cannot be sent, or "" when it can. */
function problemWith(file) {
  if (!file) return "That was not a file. Pick, drop or paste an image.";
  const name = file.name || "The pasted image";
  if (file.size === 0) return `${name} is empty.`;
  // The browser guesses the type from the name; an empty type is unknown, not wrong, so let the server judge.
  if (file.type && !file.type.startsWith("image/")) return `${name} is not an image (${file.type}).`;
  if (file.size > MAX_UPLOAD - MULTIPART_OVERHEAD) {
    const size = formatBytes(file.size);
    const limit = formatBytes(MAX_UPLOAD);
    return size === limit // "20 MB; the limit is 20 MB" would read as nonsense
      ? `${name} is just over the ${limit} limit. Try a smaller copy.`
      : `${name} is ${size}; the limit is ${limit}. Try a smaller copy.`;
  }
  return "";
}

function searchFile(file) {
  const problem = problemWith(file);
  if (problem) {
    showError(problem);
    return;
  }
  state.lastImage = file;
  // Leave a search by id behind: a new history entry without the hash, so Back returns to that id.
  if (location.hash) {
    history.pushState(null, "", location.pathname + location.search);
    state.routedHash = location.hash;
  }
  showFile(file);
  search({ kind: "image", file });
}

function searchId(id) {
  const path = state.paths.get(id);
  showQuery(`/api/images/${id}/thumbnail`, path || `Image #${id}`, path ? `Image #${id}` : "", id);
  document.title = `${path || `Image #${id}`} — lookalike`;
  window.scrollTo(0, 0); // the query and the first results are at the top; a card may have been far down
  search({ kind: "id", id });
}

// ---------------------------------------------------------------------------------------------- wiring

function wire() {
  setK(DEFAULT_K);
  if (/Mac|iPhone|iPad/.test(navigator.platform || "")) $("paste-key").textContent = "⌘V";

  $("file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = ""; // choosing the same file again should search again
    if (file) searchFile(file);
  });
  // A click anywhere on the drop zone opens the file chooser (the label and the link handle their own clicks).
  $("drop-zone").addEventListener("click", (e) => {
    if (!e.target.closest("label, input, a")) $("file-input").click();
  });
  // A file that is not a picture after all (text named .jpg) cannot be previewed: hide the broken image.
  $("query-preview").addEventListener("error", (e) => {
    if (e.target.getAttribute("src")) e.target.hidden = true;
  });

  // Drag and drop anywhere on the page; the drop zone lights up while something is dragged over the window.
  // dragenter/dragleave fire for every child crossed, hence the depth count.
  const zone = $("drop-zone");
  let depth = 0;
  document.addEventListener("dragenter", (e) => {
    e.preventDefault();
    depth += 1;
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (e) => {
    e.preventDefault(); // without it the browser would open a dropped file in place of the page
    if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    const transfer = e.dataTransfer;
    const files = transfer ? [...transfer.files] : [];
    if (files.length) {
      searchFile(files.find((f) => f.type.startsWith("image/")) || files[0]);
      return;
    }
    // A result card or thumbnail dragged in arrives as a link to one of our images: search by its id.
    const id = transfer && idFromUrl(transfer.getData("text/uri-list") || transfer.getData("text/plain"));
    if (id) {
      location.hash = hashFor(id);
    } else {
      showError("Drop an image file. A picture dragged from another web site arrives as a link this page " +
        "cannot fetch: save it first, or copy it and paste it here.");
    }
  });

  document.addEventListener("paste", (e) => {
    const data = e.clipboardData;
    if (!data) return;
    const files = [...data.files];
    const file = files.find((f) => f.type.startsWith("image/")) || files[0];
    if (file) {
      e.preventDefault();
      searchFile(file);
    } else {
      showError("The clipboard holds no image. Copy an image itself (not its address), then paste again.");
    }
  });

  // Cards are links to #id=N: following one changes the hash, and route() does the search.
  $("results").addEventListener("click", (e) => {
    const link = e.target.closest("a.result");
    if (!link || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return; // new tab: the browser's job
    state.focusFirst = e.detail === 0; // 0: activated from the keyboard, not by a pointer
    if (link.getAttribute("href") === location.hash) {
      e.preventDefault(); // the same hash again fires no hashchange: search anyway
      state.routedHash = null;
      route();
    }
  });

  $("k-select").addEventListener("change", () => {
    if (!state.view) return;
    if (state.view.kind === "id") {
      history.replaceState(null, "", hashFor(state.view.id)); // a reload or a shared link keeps k
      state.routedHash = location.hash;
    }
    search(state.view);
  });
  $("more").addEventListener("click", () => state.view && search(state.view, true));
  $("show-recon").addEventListener("change", (e) => {
    document.body.classList.toggle("with-recon", e.target.checked);
    for (const img of $("results").querySelectorAll(".recon")) {
      if (e.target.checked) showRecon(img);
      else img.hidden = true;
    }
    showQueryRecon();
  });

  // Back, Forward, an edited address and a followed card all land here. Some moves fire both events; route()
  // ignores a hash it has already built.
  window.addEventListener("hashchange", route);
  window.addEventListener("popstate", route);
  route();
}

wire();
