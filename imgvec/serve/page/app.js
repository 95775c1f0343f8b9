// The imgvec page: plain JavaScript over the HTTP API (/docs lists it). Every text from the
// library goes in through textContent, never as HTML, so odd file names stay text.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { query: null };  // {kind: "upload", file}, {kind: "id", id, path} or {kind: "text"}

function el(tag, { dataset = {}, ...props } = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  Object.assign(node.dataset, dataset);
  node.append(...children);
  return node;
}

async function api(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function baseName(path) {
  return path.split("/").pop();
}

function thumb(id, size = 256) {
  const img = el("img", { src: `/api/images/${id}/thumbnail?size=${size}`, loading: "lazy", alt: "" });
  // A file gone or changed since it was added: a plain box saying so, not a broken image.
  img.addEventListener("error", () => img.replaceWith(el("span", { className: "missing" }, "no preview")));
  return img;
}

function searchParams() {
  const k = Math.min(1000, Math.max(1, Number.parseInt($("k").value, 10) || 24));
  $("k").value = k;
  const params = new URLSearchParams({ k });
  const where = $("where").value.trim();
  if (where) params.set("where", where);
  if (!$("model-field").hidden && $("model").value) params.set("model", $("model").value);
  return params;
}

async function search() {
  if (!state.query) return;
  showError("");
  const params = searchParams();
  const results = $("results");
  results.setAttribute("aria-busy", "true");
  try {
    let found;
    if (state.query.kind === "upload") {
      const file = state.query.file;
      const words = $("words").value.trim();
      if (words) params.append("text", words);
      found = await api(`/api/search?${params}`, {
        method: "POST",
        body: file,
        headers: { "Content-Type": file.type || "application/octet-stream", "X-Filename": encodeURIComponent(file.name) },
      });
    } else {
      // Words alone, or a library image and the words combined (the API's rule).
      if (state.query.kind === "id") params.set("id", state.query.id);
      const words = $("words").value.trim();
      if (words) params.append("text", words);
      found = await api(`/api/search?${params}`);
    }
    render(found);
  } catch (error) {
    results.replaceChildren();
    const label = { upload: () => state.query.file.name, id: () => state.query.path, text: () => $("words").value };
    $("query-caption").textContent = baseName(label[state.query.kind]());
    showError(error.message);
  } finally {
    results.removeAttribute("aria-busy");
  }
}

function render(found) {
  const hits = found.results.map((hit) => {
    const button = el("button", { type: "button", title: `${hit.path}\nMore like this` },
      thumb(hit.id),
      el("span", { className: "meta" },
        el("span", { className: "score" }, hit.score.toFixed(3)),
        el("span", { className: "name" }, baseName(hit.path))));
    button.addEventListener("click", () => {
      state.query = { kind: "id", id: hit.id, path: hit.path };
      showQuery(`/api/images/${hit.id}/thumbnail?size=256`, hit.path);
      search();
    });
    return el("li", { className: "hit", dataset: { id: hit.id, path: hit.path } }, button);
  });
  $("results").replaceChildren(...hits);
  const filter = found.filter ? ` · ${found.filter.matches} images match the filter` : "";
  const what = found.vector === "text" ? found.query : baseName(found.query);
  $("query-caption").textContent = `${what} · ${hits.length} results${filter}`;
  if (!hits.length) showError("No results" + (found.filter ? " match the filter" : ""));
}

function showQuery(src, path) {
  $("query").hidden = false;
  $("query-image").hidden = false;
  $("query-image").src = src;
  $("query-caption").textContent = baseName(path);
}

function pick(file) {
  if (!file) return;
  state.query = { kind: "upload", file };
  showQuery(URL.createObjectURL(file), file.name);
  search();
}

async function loadStatus() {
  try {
    const status = await api("/api/status");
    const active = status.models.find((m) => m.active);
    const complete = status.models.filter((m) => m.complete && m.indexed);
    const index = status.index
      ? `index v${status.index.version} (${status.index.kind}${status.index.stale ? ", catching up" : ""})`
      : "no index yet";
    $("status").textContent = [
      `${status.images.toLocaleString()} images`,
      active ? `model ${active.model.name}` : "no model yet",
      index,
      status.writes ? "writes allowed" : "read-only",
    ].join(" · ");
    const select = $("model");
    select.replaceChildren(...complete.map((m) => el("option", { value: m.model.name, selected: m.active }, m.model.name)));
    $("model-field").hidden = complete.length < 2;
  } catch (error) {
    $("status").textContent = `Cannot reach the library: ${error.message}`;
  }
}

async function findDupes() {
  const button = $("find-dupes");
  button.disabled = true;
  $("dupes-summary").textContent = "Looking for duplicates…";
  try {
    const report = await api("/api/dupes");
    const groups = report.groups.map((group, n) => el("li", { className: "group" },
      el("p", {}, `Group ${n + 1}: ${group.members.length} images`),
      el("ol", {}, ...group.members.map((m) => el("li", { className: m.keep ? "member keeper" : "member" },
        thumb(m.id, 256),
        el("span", { className: "meta" },
          el("span", { className: "tag" }, m.keep ? "keep" : `${m.signal} · ${m.similarity.toFixed(3)}`),
          el("span", { className: "name", title: m.path }, baseName(m.path))))))));
    $("groups").replaceChildren(...groups);
    const groupCount = report.groups.length === 1 ? "1 group" : `${report.groups.length} groups`;
    $("dupes-summary").textContent = `${groupCount} among ${report.checked} images (near-duplicate cut: cosine ${report.threshold}).`;
  } catch (error) {
    $("dupes-summary").textContent = `Cannot list duplicates: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

function showTab(name) {
  for (const tab of ["search", "dupes"]) {
    $(`${tab}-view`).hidden = tab !== name;
    $(`tab-${tab}`).setAttribute("aria-pressed", String(tab === name));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("query-image").addEventListener("error", () => { $("query-image").hidden = true; });
  $("file").addEventListener("change", (event) => pick(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    pick(event.dataTransfer.files[0]);
  });
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  $("words").addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    if (!$("words").value.trim()) return;
    if (!state.query || state.query.kind === "upload") {
      state.query = { kind: "text" };
      $("query").hidden = false;
      $("query-image").hidden = true;
    }
    search();
  });
  for (const id of ["where", "k", "model"]) $(id).addEventListener("change", search);
  $("tab-search").addEventListener("click", () => showTab("search"));
  $("tab-dupes").addEventListener("click", () => showTab("dupes"));
  $("find-dupes").addEventListener("click", findDupes);
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", "/");
  loadStatus();
  setInterval(loadStatus, 15000);
});
