// Health at a glance: the engine, adapters resident in it, requests in flight, and the last
// minute's latency and abstention rate, from /readyz and /v1/status (this replica's own state;
// several replicas: each reports its own, and Prometheus sums them).

import { api } from "./api.js";
import { append, clear, errorBox, fmt, h, table } from "./dom.js";

const REFRESH_MS = 5000;

export async function render(main) {
  const body = h("div", { id: "health" });
  const stamp = h("p", { class: "muted", id: "health-updated" });
  main.append(h("h1", {}, "Health"), h("div", { class: "toolbar" },
    h("button", { type: "button", class: "secondary", onclick: () => refresh() }, "Refresh now"), stamp), body);

  async function refresh() {
    let status;
    try {
      status = await api("/v1/status");
    } catch (err) {
      clear(body).append(errorBox(err));
      return;
    }
    const last = status.last_minute;
    const rate = last.abstention_rate === null ? "–" : `${(last.abstention_rate * 100).toFixed(0)}%`;
    append(clear(body),
      h("div", { class: "grid" },
        tile("Engine", status.engine.ready ? "ready" : "NOT READY", status.engine.ready ? "ok" : "bad", "engine-state"),
        tile("Adapters loaded", String(status.adapters_loaded.length), null, "adapters-loaded"),
        tile("Requests in flight", String(status.in_flight), null, "in-flight"),
        tile(`Abstention rate (last ${status.window_s} s)`, rate, null, "abstention-rate",
          `${last.abstained} of ${last.grounded} grounded answers`),
        tile(`Latency p50 / p95 (last ${status.window_s} s)`,
          last.latency_p50_s === null ? "–" : `${fmt(last.latency_p50_s, 2)} / ${fmt(last.latency_p95_s, 2)} s`,
          null, "latency", `${last.requests} request(s), ${last.errors} error(s)`)),
      status.adapters_loaded.length ? h("p", {}, "Resident in the engine: ", status.adapters_loaded.join(", ")) : null,
      Object.keys(last.abstentions_by_reason).length
        ? table("Abstentions by reason (last minute)", ["reason", "count"],
          Object.entries(last.abstentions_by_reason).sort((a, b) => b[1] - a[1]), { numeric: [1] })
        : null,
      h("p", { class: "muted" }, `Replica ${status.replica}. Operators: the same figures, for every replica and over `
        + "any window, are on /metrics for Prometheus."));
    stamp.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }
  await refresh();
  const timer = window.setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  return () => window.clearInterval(timer);
}

function tile(label, value, tone, id, note) {
  return h("div", { class: "panel", id },
    h("div", { class: "muted" }, label),
    h("div", { class: `stat ${tone || ""}` }, value),
    note ? h("div", { class: "muted" }, note) : null);
}
