// Sources: the folders and SQL queries the tenant's collections sync from, and their jobs: each
// source's last sync (how long ago, how it ended, what it counted), a queued or running job's
// progress (seen / total, rate, time left), the first items a job could not ingest and why, and
// "Sync now" / "Cancel". It polls every second while a job is queued or running, and every 10 s
// otherwise, so a scheduled sync shows up without a reload.

import { api, enc } from "./api.js";
import { announce, append, clear, errorBox, fmt, h, table } from "./dom.js";

const ACTIVE_MS = 1000;
const IDLE_MS = 10000;
const ERRORS_SHOWN = 5; // GET /v1/jobs/{id} returns the first 100; the page names the first few
const COUNTS = ["added", "updated", "unchanged", "deleted", "failed"];
const TONE = { succeeded: "ok", failed: "bad", cancelled: "warn", queued: "", running: "" };

export async function render(main, session) {
  main.append(h("h1", {}, "Sources"));
  if (!session.can("ingest")) {
    main.append(h("p", { class: "muted" }, "Sources and their sync jobs need a key with the "
      + "'ingest' scope; this key lacks it."));
    return null;
  }
  const status = h("div", { id: "sources-status" });
  const stamp = h("p", { class: "muted", id: "sources-updated" });
  const list = h("section", { id: "sources", "aria-label": "Sources and their jobs" });
  const errors = h("section", { id: "source-errors", "aria-labelledby": "source-errors-title" });
  main.append(
    h("p", { class: "muted" }, "Folders and SQL queries this tenant's collections sync from. "
      + "Sources are created and deleted through the API (POST and DELETE /v1/sources)."),
    h("div", { class: "toolbar" },
      h("button", { type: "button", class: "secondary", onclick: () => refresh() }, "Refresh now"), stamp),
    status, list, errors);

  const jobErrors = new Map(); // job id -> { key, errors }: fetched again only when they grew
  const watching = new Map(); // source name -> id of its active job, to announce how it ended
  let timer = null;
  let left = false;

  async function act(call, done) {
    clear(status);
    try {
      await call();
      announce(done);
    } catch (err) { status.append(errorBox(err)); }
    await refresh();
  }
  const actions = {
    sync: (source) => act(() => api(`/v1/sources/${enc(source.name)}/sync`,
      { method: "POST", body: { full: true } }), `Sync of ${source.name} queued`),
    cancel: (source) => act(() => api(`/v1/jobs/${enc(source.active_job.id)}/cancel`,
      { method: "POST" }), `Cancelling the sync of ${source.name}`),
  };

  async function refresh() {
    window.clearTimeout(timer);
    let sources;
    try {
      sources = (await api("/v1/sources")).data;
      await Promise.all(sources.map((s) => loadErrors(shownJob(s), jobErrors)));
    } catch (err) {
      clear(list).append(errorBox(err));
      schedule(IDLE_MS);
      return;
    }
    if (left) return;
    announceEnded(sources, watching);
    const focused = document.activeElement && document.activeElement.closest("#sources")
      ? { ...document.activeElement.dataset } : null;
    clear(list).append(sources.length ? sourceTable(sources, actions)
      : h("p", { class: "muted" }, "No sources yet: create one with POST /v1/sources."));
    if (focused && focused.source) restoreFocus(list, focused);
    append(clear(errors), errorsView(sources, jobErrors));
    stamp.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    schedule(sources.some((s) => s.active_job) ? ACTIVE_MS : IDLE_MS);
  }
  function schedule(ms) {
    window.clearTimeout(timer); // one pending poll, however many refreshes ran at once
    if (left) return;
    timer = window.setTimeout(() => { if (document.hidden) schedule(ms); else refresh(); }, ms);
  }

  await refresh();
  return () => { left = true; window.clearTimeout(timer); };
}

// The job whose errors the page shows: the one in progress, else the last that ended.
function shownJob(source) { return source.active_job || source.last_job; }

async function loadErrors(job, cache) {
  if (!job || !job.progress.failed) return;
  const key = `${job.state}:${job.progress.failed}`;
  const known = cache.get(job.id);
  if (known && known.key === key) return;
  const full = await api(`/v1/jobs/${enc(job.id)}`);
  cache.set(job.id, { key, errors: full.errors || [] });
}

function announceEnded(sources, watching) {
  for (const source of sources) {
    const watched = watching.get(source.name);
    const last = source.last_job;
    if (watched && last && last.id === watched && !(source.active_job && source.active_job.id === watched)) {
      announce(`Sync of ${source.name} ${last.state}: ${counts(last.progress)}`);
    }
    if (source.active_job) watching.set(source.name, source.active_job.id);
    else watching.delete(source.name);
  }
}

function sourceTable(sources, actions) {
  const headers = ["source", "collection", "reads", "schedule", "last sync", "current job", ""];
  return h("table", {},
    h("caption", {}, `${sources.length} source(s)`),
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, sources.map((s) => h("tr", { "data-source": s.name },
      h("th", { scope: "row", tabindex: -1, "data-source": s.name }, s.name),
      h("td", {}, s.collection),
      h("td", {}, reads(s.spec)),
      h("td", {}, s.interval_s ? `every ${span(s.interval_s)}` : "on request"),
      h("td", { class: "last-sync" }, lastSync(s)),
      h("td", { class: "current-job" }, currentJob(s)),
      h("td", {}, h("div", { class: "toolbar" }, buttons(s, actions)))))));
}

function reads(spec) {
  if (spec.kind === "folder") return ["folder ", h("code", {}, spec.path)];
  const query = spec.query.length > 60 ? `${spec.query.slice(0, 60)}…` : spec.query;
  return ["SQL ", h("code", { title: spec.query }, query)];
}

function lastSync(source) {
  const job = source.last_job;
  if (!job) return h("span", { class: "muted" }, "never synced");
  return [
    h("span", { class: `badge ${TONE[job.state]}` }, job.state), " ", when(job.finished_at),
    h("div", { class: "counts" }, counts(job.progress)),
    job.error ? h("div", { class: "bad" }, job.error) : null,
    job.state !== "succeeded"
      ? h("div", { class: "muted" }, source.last_success_at
        ? ["last success ", when(source.last_success_at)] : "never succeeded")
      : null,
  ];
}

function currentJob(source) {
  const job = source.active_job;
  if (!job) return h("span", { class: "muted" }, "–");
  const p = job.progress;
  const state = h("span", { class: "badge" }, job.cancel_requested ? "cancelling" : job.state);
  if (job.state === "queued") return [state, " since ", when(job.created_at, "")];
  const bar = p.total === null
    ? h("progress", { "aria-label": `Sync progress of ${source.name}` }) // how many: not known yet
    : h("progress", { max: Math.max(p.total, 1), value: p.seen, "aria-label": `Sync progress of ${source.name}` });
  const figures = [`${p.seen} / ${p.total === null ? "?" : p.total}`];
  if (job.rate_per_s !== null) figures.push(`${rate(job.rate_per_s)} items/s`);
  if (job.eta_s !== null) figures.push(`about ${span(job.eta_s)} left`);
  return [state, h("div", {}, bar), h("div", { class: "progress-figures" }, figures.join(" · ")),
    h("div", { class: "counts muted" }, counts(p))];
}

function buttons(source, actions) {
  const job = source.active_job;
  return [
    h("button", { type: "button", "data-source": source.name, "data-action": "sync", disabled: Boolean(job),
      "aria-label": `Sync ${source.name} now`, onclick: () => actions.sync(source) }, "Sync now"),
    job && !job.cancel_requested
      ? h("button", { type: "button", class: "danger", "data-source": source.name, "data-action": "cancel",
        "aria-label": `Cancel the sync of ${source.name}`, onclick: () => actions.cancel(source) }, "Cancel")
      : null,
  ];
}

// After a redraw, focus what had it, or its row's other button, or its row's heading (a button
// that was pressed may be gone or disabled now: keyboard users must not land on the page's top).
function restoreFocus(list, { source, action }) {
  const row = [...list.querySelectorAll("tr[data-source]")].find((tr) => tr.dataset.source === source);
  if (!row) return;
  const order = action === "cancel" ? ["cancel", "sync"] : ["sync", "cancel"];
  const target = order.map((a) => row.querySelector(`button[data-action=${a}]`))
    .find((b) => b && !b.disabled) || row.querySelector("th");
  target.focus();
}

function errorsView(sources, cache) {
  const parts = [];
  for (const source of sources) {
    const job = shownJob(source);
    const known = job && job.progress.failed ? cache.get(job.id) : null;
    if (!known) continue;
    const shown = known.errors.slice(0, ERRORS_SHOWN);
    const more = job.progress.failed - shown.length;
    parts.push(h("div", { class: "panel", "data-source": source.name },
      h("h3", {}, `${source.name}: ${job.progress.failed} item(s) failed in job ${job.id.slice(0, 8)} (${job.state})`),
      table(null, ["item", "why", "when"], shown.map((e) => [e.item, e.error, when(e.at)])),
      more > 0 ? h("p", { class: "muted" }, `and ${more} more: GET /v1/jobs/${job.id} lists the first 100.`) : null));
  }
  return parts.length ? [h("h2", { id: "source-errors-title" }, "Items that failed"), parts] : [];
}

function rate(perS) { return fmt(perS, perS >= 10 ? 0 : perS >= 1 ? 1 : 2); }

function counts(p) { return COUNTS.map((name) => `${p[name]} ${name}`).join(" · "); }

// "5 min ago", with the exact time as the element's machine-readable and hover value.
function when(seconds, suffix = " ago") {
  if (seconds === null || seconds === undefined) return "–";
  const date = new Date(seconds * 1000);
  const age = Date.now() / 1000 - seconds;
  return h("time", { datetime: date.toISOString(), title: date.toLocaleString() },
    age < 5 ? "just now" : `${span(age)}${suffix}`);
}

function span(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 48 * 3600) return `${fmt(seconds / 3600, 1)} h`;
  return `${fmt(seconds / 86400, 1)} d`;
}
