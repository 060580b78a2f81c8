// Documents: the tenant's collections and their documents (versions, chunks, updated_at), upload
// by drag and drop with progress, delete, and a search that shows what /v1/retrieve returns in
// each mode (dense, sparse, hybrid) side by side.

import { api, enc, upload } from "./api.js";
import { announce, append, clear, errorBox, fmt, h, table } from "./dom.js";

const SEARCH_MODES = ["hybrid", "dense", "sparse"];

export async function render(main, session) {
  main.append(h("h1", {}, "Documents"));
  const state = { collection: "" };
  const docsSection = h("section", { id: "documents", "aria-label": "Documents of the collection" });
  const searchSection = h("section", { id: "search", "aria-labelledby": "search-title" });
  const picker = h("input", { id: "collection-name", list: "collection-names", required: true });
  const listSection = h("section", { id: "collections", "aria-labelledby": "collections-title" });

  async function showCollections() {
    clear(listSection).append(h("h2", { id: "collections-title" }, "Collections"));
    if (!session.can("ingest")) {
      listSection.append(h("p", { class: "muted" }, "This key may search but not list or change "
        + "collections (it lacks the 'ingest' scope). Type a collection name to search it."));
      return;
    }
    const names = (await api("/v1/collections")).data.map((c) => c.name);
    const create = h("input", { id: "new-collection", required: true, pattern: "[A-Za-z0-9_.\\-]+" });
    const form = h("form", { class: "row" }, h("label", { for: "new-collection" }, "New collection", create),
      h("button", { type: "submit" }, "Create"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("/v1/collections", { method: "POST", body: { name: create.value.trim() } });
        state.collection = create.value.trim();
        announce(`Collection ${state.collection} created`);
        await refresh();
      } catch (err) { form.after(errorBox(err)); }
    });
    listSection.append(
      names.length ? h("ul", {}, names.map((name) => h("li", {},
        h("button", { type: "button", class: "secondary", "aria-pressed": String(name === state.collection),
          onclick: () => { state.collection = name; picker.value = name; refresh(); } }, name),
        session.can("admin") ? [" ", h("button", { type: "button", class: "danger",
          "aria-label": `Delete collection ${name}`, onclick: async () => {
            if (!window.confirm(`Delete collection ${name} and all its documents?`)) return;
            try { await api(`/v1/collections/${enc(name)}`, { method: "DELETE" }); announce(`Deleted ${name}`);
              if (state.collection === name) state.collection = ""; await refresh();
            } catch (err) { listSection.append(errorBox(err)); }
          } }, "Delete")] : null)))
        : h("p", { class: "muted" }, "No collections yet."),
      h("datalist", { id: "collection-names" }, names.map((n) => h("option", { value: n }))),
      form);
    if (!state.collection && names.length) {
      state.collection = names.includes("demo") ? "demo" : names[0];
      picker.value = state.collection;
    }
  }

  async function refresh() {
    docsSection.setAttribute("aria-busy", "true");
    try {
      await showCollections();
      if (session.can("ingest") && state.collection) await showDocuments(docsSection, state.collection);
      else clear(docsSection);
    } catch (err) { main.append(errorBox(err)); }
    docsSection.setAttribute("aria-busy", "false");
  }

  picker.addEventListener("change", () => { state.collection = picker.value.trim(); refresh(); });
  renderSearch(searchSection, picker, () => state.collection || picker.value.trim());
  main.append(listSection, docsSection, searchSection);
  await refresh();
}

async function showDocuments(section, collection) {
  const list = h("div", { id: "document-list" });
  clear(section).append(h("h2", {}, `Documents in ${collection}`),
    renderUpload(collection, () => listDocuments(list, collection)), list);
  await listDocuments(list, collection);
}

// One page of documents after another ("Load more"); re-read from the start after a change.
async function listDocuments(el, collection, after = null, rows = []) {
  const page = await api(`/v1/collections/${enc(collection)}/documents?limit=50${after ? `&after=${enc(after)}` : ""}`);
  rows = rows.concat(page.data);
  clear(el).append(rows.length ? table(`${rows.length} document(s)${page.next_after ? " so far" : ""}`,
    ["document", "title", "version", "chunks", "updated_at", ""],
    rows.map((d) => [d.id, d.title, h("code", {}, d.version), d.chunk_count, d.updated_at,
      h("button", { type: "button", class: "danger", "aria-label": `Delete document ${d.id}`, onclick: async () => {
        try {
          await api(`/v1/collections/${enc(collection)}/documents/${enc(d.id)}`, { method: "DELETE" });
          announce(`Deleted ${d.id}`);
          await listDocuments(el, collection);
        } catch (err) { el.append(errorBox(err)); }
      } }, "Delete")]), { numeric: [3] })
    : h("p", { class: "muted" }, "No documents yet: upload some."));
  if (page.next_after) {
    el.append(h("button", { type: "button", class: "secondary",
      onclick: () => listDocuments(el, collection, page.next_after, rows) }, "Load more"));
  }
}

function renderUpload(collection, done) {
  const input = h("input", { id: "upload-files", type: "file", multiple: true,
    accept: ".md,.markdown,.txt,.html,.htm,.json,.jsonl,.pdf,text/*" });
  const progress = h("progress", { id: "upload-progress", max: 1, value: 0, hidden: true, "aria-label": "Upload progress" });
  const status = h("p", { id: "upload-status", role: "status" });
  const zone = h("div", { class: "dropzone", id: "dropzone" },
    h("p", {}, "Drop files here, or "), h("label", { for: "upload-files" }, "choose files to upload", input), progress, status);

  async function send(files) {
    if (!files.length) return;
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    progress.hidden = false;
    progress.value = 0;
    status.textContent = `Uploading ${files.length} file(s)…`;
    try {
      const result = await upload(`/v1/collections/${enc(collection)}/documents/upload`, form,
        (share) => { progress.value = share; });
      progress.value = 1;
      status.textContent = `Uploaded: ${result.added} added, ${result.replaced} replaced, `
        + `${result.unchanged} unchanged, ${result.chunks} chunks.`;
      announce(status.textContent);
      await done();
    } catch (err) {
      status.textContent = "";
      zone.append(errorBox(err));
    }
  }
  input.addEventListener("change", () => send([...input.files]));
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    send([...event.dataTransfer.files]);
  });
  return h("div", {}, h("h3", {}, "Upload"), zone);
}

function renderSearch(section, picker, currentCollection) {
  const query = h("input", { id: "search-query", type: "search", required: true, size: 40 });
  const topK = h("input", { id: "search-top-k", type: "number", min: 1, max: 100, value: 5 });
  const results = h("div", { id: "search-results" });
  const form = h("form", { class: "row", id: "search-form" },
    h("label", { for: "collection-name" }, "Collection", picker),
    h("label", { for: "search-query" }, "Query", query),
    h("label", { for: "search-top-k" }, "Top k", topK),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(results).append(h("p", { class: "muted" }, "Searching…"));
    try {
      const body = { collection: currentCollection(), query: query.value.trim(), top_k: Number(topK.value) || 5 };
      const answers = await Promise.all(SEARCH_MODES.map((mode) => api("/v1/retrieve", { method: "POST", body: { ...body, mode } })));
      renderResults(clear(results), answers);
    } catch (err) { clear(results).append(errorBox(err)); }
  });
  append(section, h("h2", { id: "search-title" }, "Search"),
    h("p", { class: "muted" }, "The same query in each retrieval mode. Hybrid fuses the dense and "
      + "sparse rankings; its score is the fused score. A dash: not in that mode's top k."),
    form, results);
}

function renderResults(el, answers) {
  const byChunk = new Map();
  answers.forEach((answer, m) => answer.data.forEach((source, rank) => {
    const row = byChunk.get(source.chunk_id) || { source, cells: {} };
    row.cells[SEARCH_MODES[m]] = { score: source.score, rank: rank + 1 };
    byChunk.set(source.chunk_id, row);
  }));
  const rows = [...byChunk.values()].sort((a, b) =>
    ((a.cells.hybrid || {}).rank || 999) - ((b.cells.hybrid || {}).rank || 999));
  const hybrid = answers[0];
  el.append(h("p", { id: "search-gate" }, `Retrieval gate: best dense similarity ${fmt(hybrid.top_score)} `
    + `against threshold ${fmt(hybrid.threshold)}: ${hybrid.passed_gate ? "passes (chat would answer from these)"
      : "fails (chat would abstain without calling the model)"}.`));
  el.append(rows.length ? table(`${rows.length} chunk(s)`,
    ["chunk", ...SEARCH_MODES.map((m) => `${m} score (rank)`)],
    rows.map(({ source, cells }) => [
      h("details", {}, h("summary", {}, `${source.title || source.doc_id} · ${source.doc_id}`), h("pre", {}, source.text)),
      ...SEARCH_MODES.map((m) => (cells[m] ? `${fmt(cells[m].score)} (#${cells[m].rank})` : "–")),
    ]), { numeric: [1, 2, 3] })
    : h("p", { class: "muted" }, "Nothing found."));
  announce(`${rows.length} chunks found`);
}
