// The query page: pick, drop or paste an image -> POST /api/search; click a result -> GET /api/search?id=.
"use strict";

const $ = (id) => document.getElementById(id);
const maxUpload = Number(document.body.dataset.maxUpload);
let current = null; // what the grid shows: {kind: "image", file} or {kind: "id", id}
let shown = 0; // results in the grid, the offset of the next "Load more"
let busy = false;

function k() {
  return Number($("k-select").value);
}

function setBusy(on) {
  busy = on;
  document.body.classList.toggle("busy", on);
  $("file-input").disabled = on;
  $("k-select").disabled = on;
  $("more").disabled = on;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function formatBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.ceil(n / 1e3)} kB`;
}

// Any answer becomes {ok, body}; errors carry a readable message whatever the server sent (our JSON envelope,
// a plain-text 413 from waitress, or nothing at all when the network failed).
async function call(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    return { ok: false, message: "The server did not answer. Is it still running?" };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    // not JSON: handled below by status
  }
  if (response.ok && body) return { ok: true, body };
  if (body && body.error) return { ok: false, message: body.error.message };
  if (response.status === 413) return { ok: false, message: `The image is larger than the ${formatBytes(maxUpload)} limit.` };
  return { ok: false, message: `The server answered ${response.status} ${response.statusText}.` };
}

async function search(query, append) {
  if (busy) return;
  const offset = append ? shown : 0;
  let url;
  let options;
  if (query.kind === "image") {
    const form = new FormData();
    form.append("image", query.file, query.file.name || "pasted-image");
    url = `/api/search?k=${k()}&offset=${offset}`;
    options = { method: "POST", body: form };
  } else {
    url = `/api/search?id=${encodeURIComponent(query.id)}&k=${k()}&offset=${offset}`;
    options = {};
  }
  showError("");
  setBusy(true);
  const answer = await call(url, options);
  setBusy(false);
  if (!answer.ok) {
    showError(answer.message);
    return;
  }
  current = query;
  render(answer.body, append);
}

function render(body, append) {
  const grid = $("results");
  if (!append) {
    grid.replaceChildren();
    shown = 0;
  }
  const template = $("result-template");
  for (const hit of body.results) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.id = hit.id;
    const img = card.querySelector("img");
    img.src = hit.thumbnail;
    img.alt = hit.path;
    card.querySelector(".score").textContent = `${Math.round(hit.score * 100)}%`;
    card.querySelector(".distance").textContent = `d ${hit.distance.toFixed(3)}`;
    const path = card.querySelector(".path");
    path.textContent = hit.path;
    path.title = hit.path;
    card.setAttribute("aria-label", `${hit.path}, similarity ${Math.round(hit.score * 100)}%: search by this image`);
    grid.append(card);
  }
  shown += body.results.length;
  const total = shown === 1 ? "1 result" : `${shown.toLocaleString()} results`;
  $("status").textContent = `${total} in ${body.took_ms} ms from ${body.images.toLocaleString()} images`;
  // A full page suggests there may be more; the server caps offset, so stop at the collection size.
  $("more").hidden = body.results.length < body.k || shown >= body.images;
  const notice = $("unusual-notice");
  const unusual = body.query && body.query.unusual;
  notice.hidden = !unusual;
  notice.textContent = unusual
    ? `This image is unlike your collection (the model rebuilds it worse than ${body.query.error_percentile}% ` +
      "of the indexed images), so these neighbours may be loose matches."
    : "";
}

function preview(src) {
  const img = $("query-preview");
  if (img.dataset.objectUrl) URL.revokeObjectURL(img.dataset.objectUrl);
  img.dataset.objectUrl = src.startsWith("blob:") ? src : "";
  img.src = src;
  img.hidden = false;
  $("drop-zone").classList.add("has-image");
}

function searchFile(file) {
  if (!file) return;
  if (file.size > maxUpload) {
    showError(`${file.name || "The image"} is ${formatBytes(file.size)}; the limit is ${formatBytes(maxUpload)}.`);
    return;
  }
  preview(URL.createObjectURL(file));
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
  search({ kind: "image", file }, false);
}

function searchId(id, push) {
  preview(`/api/images/${id}/thumbnail`);
  if (push) history.pushState(null, "", `#id=${id}`);
  search({ kind: "id", id }, false);
}

function idFromHash() {
  const match = /^#id=(\d+)$/.exec(location.hash);
  return match ? match[1] : null;
}

function wire() {
  const k0 = document.body.dataset.k;
  if ([...$("k-select").options].some((o) => o.value === k0)) $("k-select").value = k0;

  $("file-input").addEventListener("change", (e) => {
    searchFile(e.target.files[0]);
    e.target.value = ""; // choosing the same file again should search again
  });

  const zone = $("drop-zone");
  zone.addEventListener("click", (e) => {
    if (e.target.tagName !== "LABEL" && e.target.tagName !== "INPUT") $("file-input").click();
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      $("file-input").click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    const file = [...(e.dataTransfer.files || [])][0];
    if (file) searchFile(file);
    else showError("Drop an image file (dragging a picture from another web page gives a link, not the image).");
  });
  // A drop that misses the zone must not make the browser navigate away to the file.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) {
      e.preventDefault();
      searchFile(item.getAsFile());
    }
  });

  const grid = $("results");
  const activate = (e) => {
    const card = e.target.closest(".result");
    if (card) searchId(card.dataset.id, true);
  };
  grid.addEventListener("click", activate);
  grid.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      activate(e);
    }
  });

  $("k-select").addEventListener("change", () => current && search(current, false));
  $("more").addEventListener("click", () => current && search(current, true));

  // Back and forward move between searched ids; #id=N can be shared or reloaded.
  window.addEventListener("popstate", () => {
    const id = idFromHash();
    if (id) searchId(id, false);
  });
  const id = idFromHash();
  if (id) searchId(id, false);
}

wire();
