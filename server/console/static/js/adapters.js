// Adapters: every adapter with its versions and aliases; one version's manifest, loss curve and
// eval report (tables, charts, the gate's rules with observed values and verdicts); promote and
// roll back, refused exactly as the API refuses; and the adapter's audit log.

import { api, enc } from "./api.js";
import { announce, append, clear, errorBox, facts, fmt, h, table } from "./dom.js";
import { deltaIntervals, lossCurve, scoreBars } from "./charts.js";

const ROLE_ORDER = ["candidate", "previous", "base", "system"];

export async function render(main, session) {
  main.append(h("h1", {}, "Adapters"));
  if (!session.can("admin")) {
    main.append(h("p", {}, session.principal.auth
      ? "Adapters are managed with an 'admin' key; this key may only use them by name in chat."
      : "Adapters are managed with an 'admin' key, and this gateway has no keys configured: set "
        + "RAGDOCK_API_KEYS (see the README) and sign in with a key that has the 'admin' scope."));
    return null;
  }
  const list = h("section", { id: "adapter-list", "aria-label": "All adapters" });
  const detail = h("section", { id: "adapter-detail", "aria-live": "off" });
  main.append(list, detail);
  const [, name, version] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);

  async function open(adapter, label) {
    history.replaceState(null, "", `#/adapters/${enc(adapter)}/${enc(label)}`);
    try {
      await showVersion(detail, adapter, label, reload);
    } catch (err) { clear(detail).append(errorBox(err)); }
  }
  async function reload(adapter, label) {
    await showList(list, open);
    if (adapter && label) await open(adapter, label);
  }
  await reload(name, version);
  return null;
}

async function showList(section, open) {
  const adapters = (await api("/v1/adapters")).data;
  clear(section);
  if (!adapters.length) {
    section.append(h("p", { class: "muted" }, "No adapters registered. Push one with "),
      h("code", {}, "ragdock adapters push"), " or POST /v1/adapters/upload.");
    return;
  }
  section.append(table(`${adapters.length} adapter(s)`, ["adapter", "versions", "aliases"],
    adapters.map((a) => [a.name,
      h("span", { class: "toolbar" }, a.versions.map((v) => h("button", { type: "button", class: "secondary",
        "aria-label": `Open ${a.name}@${v}`, onclick: () => open(a.name, v) }, v))),
      Object.entries(a.aliases).map(([alias, v]) => `${alias} → ${v}`).join(", ") || "–"])));
}

async function showVersion(section, name, version, reload) {
  const [v, summary, audit] = await Promise.all([
    api(`/v1/adapters/${enc(name)}/${enc(version)}`),
    api(`/v1/adapters/${enc(name)}`),
    api(`/v1/adapters/${enc(name)}/audit`),
  ]);
  clear(section).append(h("h2", { id: "version-title", tabindex: -1 }, `${name}@${version}`));
  const report = v.eval_report;
  // The platform's verdict decides promotion; a report's own `gate` is only what its uploader
  // claimed, shown as such (an unsigned report may say anything).
  const verdict = v.verdict || { status: report ? "unverified" : "missing", reason: "" };
  const gate = verdict.gate || (report && report.gate);
  const badge = { passed: "ok", failed: "bad", unverified: "warn", missing: "warn" }[verdict.status];
  section.append(h("p", {}, "Request it as model ", h("code", {}, v.model), ". Platform verdict: ",
    h("span", { class: `badge ${badge}`, id: "gate-status", title: verdict.reason },
      verdict.status === "missing" ? "no eval report" : verdict.status),
    verdict.reason ? h("span", { class: "muted", id: "verdict-reason" }, ` (${verdict.reason})`) : null));
  if (verdict.gate) section.append(gateView(verdict.gate, "the platform's", "platform-gate"));
  section.append(promotion(name, version, summary.aliases, gate, reload));
  section.append(h("h3", {}, "Registry record"), facts([
    ["pushed at", new Date(v.record.pushed_at * 1000).toISOString()], ["pushed by", v.record.pushed_by],
    ["rank / alpha", `${v.record.rank} / ${v.record.alpha}`], ["base model", v.record.base_model],
    ["size", `${(v.record.size_bytes / 1e6).toFixed(1)} MB`],
    ["target modules", (v.record.target_modules || []).join(", ")]]));
  section.append(manifestView(v.manifest, v.training_history));
  section.append(reportView(report));
  section.append(h("section", { id: "audit-log", "aria-labelledby": "audit-title" },
    h("h3", { id: "audit-title" }, "Audit log"),
    audit.length ? table("Newest first", ["time", "actor", "action", "version", "alias", "detail"],
      audit.slice().reverse().map((e) => [e.time, e.actor, e.action,
        e.version || "–", e.alias || "–", e.detail ? JSON.stringify(e.detail) : ""]))
      : h("p", { class: "muted" }, "Nothing recorded yet.")));
  section.querySelector("#version-title").focus();
}

function promotion(name, version, aliases, gate, reload) {
  const alias = h("input", { id: "promote-alias", value: "prod", required: true, size: 12 });
  const result = h("div", { id: "promote-result" });
  const form = h("form", { class: "row", id: "promote-form" },
    h("label", { for: "promote-alias" }, "Alias", alias),
    h("button", { type: "submit", id: "promote-button" }, `Promote ${version}`));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(result);
    try {
      const moved = await api(`/v1/adapters/${enc(name)}/${enc(version)}/promote`,
        { method: "POST", body: { alias: alias.value.trim() } });
      announce(`${name}:${moved.alias} now serves ${moved.version}`);
      await reload(name, version);
      document.getElementById("promote-result").append(h("p", { class: "ok", role: "status" },
        `Promoted: ${name}:${moved.alias} → ${moved.version}`));
    } catch (err) {
      result.append(errorBox(err));
      const failing = gate ? gate.verdicts.filter((x) => !x.passed) : [];
      if (failing.length) {
        result.append(h("p", {}, "The rules that failed:"), h("ul", { id: "failing-rules" },
          failing.map((x) => h("li", {}, h("code", {}, x.rule), ` observed ${x.observed}: ${x.why}`))));
      }
      announce(`Promotion refused: ${err.message}`);
    }
  });
  const rollbacks = Object.entries(aliases).map(([a, current]) => h("button", { type: "button", class: "secondary",
    "aria-label": `Roll back ${a} (now ${current})`, onclick: async () => {
      clear(result);
      try {
        const moved = await api(`/v1/adapters/${enc(name)}/rollback`, { method: "POST", body: { alias: a } });
        announce(`${name}:${a} rolled back to ${moved.version}`);
        await reload(name, version);
      } catch (err) { result.append(errorBox(err)); }
    } }, `Roll back ${a} (now ${current})`));
  return h("div", { class: "panel" }, h("h3", {}, "Promotion"),
    h("p", { class: "muted" }, "The registry promotes only a version the platform's verdict passed: a report "
      + "signed by the platform's key, judged by the platform's own gate."),
    form, rollbacks.length ? h("div", { class: "toolbar" }, rollbacks) : null, result);
}

function manifestView(m, history) {
  const section = h("section", { "aria-label": "Manifest" }, h("h3", {}, "Manifest"));
  if (!m) return append(section, h("p", { class: "muted" }, "No manifest (not made by ragdock train)."));
  const metrics = m.metrics || {};
  section.append(facts([
    ["created", m.created_at], ["method", m.method],
    ["base model", `${(m.base_model || {}).id} (weights digest ${(m.base_model || {}).digest || "not recorded: manifest v1"})`],
    ["LoRA", m.adapter ? `r=${m.adapter.r} alpha=${m.adapter.alpha} on ${(m.adapter.target_modules || []).join(", ")}` : undefined],
    ["seed", m.seed], ["steps", metrics.steps], ["train loss", metrics.first_train_loss !== undefined
      ? `${fmt(metrics.first_train_loss)} → ${fmt(metrics.final_train_loss)}` : undefined],
    ["best eval loss", metrics.best_eval_loss], ["tokens/s", metrics.tokens_per_second],
    ["train time", metrics.train_seconds !== undefined ? `${fmt(metrics.train_seconds, 0)} s` : undefined],
    ["hardware", m.hardware ? hardwareText(m.hardware) : undefined]]));
  const files = ((m.data || {}).files) || {};
  if (Object.keys(files).length) {
    section.append(table("Training data", ["split", "path", "examples", "sha256"],
      Object.entries(files).map(([split, f]) => [split, f.path, f.examples, h("code", {}, f.sha256)]), { numeric: [2] }));
  }
  if (history && history.length) {
    section.append(h("figure", {}, lossCurve(history, "Training loss"),
      h("figcaption", { class: "muted" }, "Training loss by step (line) and validation loss (points), from the run's metrics.jsonl.")));
  } else {
    section.append(h("p", { class: "muted" }, "No loss curve: this version was pushed without its run's metrics.jsonl."));
  }
  return section;
}

function reportView(report) {
  const section = h("section", { "aria-label": "Eval report" }, h("h3", {}, "Eval report"));
  if (!report) {
    return append(section, h("p", { class: "muted" }, "No eval report attached: run ",
      h("code", {}, "ragdock eval SUITE --gate GATE --attach"), "."));
  }
  const models = report.models || {};
  section.append(table("Models compared", ["role", "model"],
    ROLE_ORDER.slice(0, 3).map((role) => [role, models[role] || "(none)"])));
  if (report.holdout) section.append(h("p", {}, `Frozen holdout ${report.holdout.path}: ${report.holdout.status}.`));
  if (report.gate) section.append(gateView(report.gate, "claimed by the report"));
  for (const [taskName, task] of Object.entries(report.tasks || {})) {
    const roles = ROLE_ORDER.filter((r) => (task.metrics || {})[r]);
    const metricNames = [...new Set(roles.flatMap((r) => Object.keys(task.metrics[r])))].sort();
    const block = h("details", { class: "task" }, h("summary", {}, `${taskName} (${task.kind})`));
    block.append(table(null, ["metric", ...roles.map((r) => (models[r] ? `${r} (${models[r]})` : r))],
      metricNames.map((m) => [m, ...roles.map((r) => fmt(task.metrics[r][m]))]),
      { numeric: roles.map((_, i) => i + 1) }));
    const bars = scoreBars(task, roles, `${taskName}: scores`);
    if (bars) block.append(bars);
    for (const [comparison, deltas] of Object.entries(task.deltas || {})) {
      if (!Object.keys(deltas).length) continue;
      const level = Object.values(deltas)[0].level;
      block.append(table(`Candidate ${comparison.replace("_", " ")}: delta [${Math.round(level * 100)}% paired bootstrap interval]`,
        ["metric", "delta", "interval", "n"], Object.entries(deltas).sort().map(([m, iv]) =>
          [m, fmt(iv.delta), `[${fmt(iv.low)}, ${fmt(iv.high)}]`, iv.n]), { numeric: [1, 3] }));
      const chart = deltaIntervals(deltas, `${taskName}: candidate ${comparison.replace("_", " ")}`);
      if (chart) block.append(chart);
    }
    if (task.relative && Object.keys(task.relative).length) {
      block.append(table("Candidate relative to base (positive = worse)", ["measure", "value", "interval"],
        Object.entries(task.relative).sort().map(([m, iv]) => [m, fmt(iv.value), `[${fmt(iv.low)}, ${fmt(iv.high)}]`]), { numeric: [1] }));
    }
    for (const note of task.notes || []) block.append(h("p", { class: "muted" }, note));
    const failures = (task.failures || []).filter((f) => f.question || f.output || f.verdict);
    if (failures.length) {
      block.append(h("h4", {}, "Where the candidate fails (first 8)"), h("ul", {}, failures.slice(0, 8).map((f) =>
        h("li", {}, h("code", {}, f.id), failureText(f)))));
    }
    section.append(block);
  }
  return section;
}

function gateView(gate, whose, id = "gate") {
  return h("div", { id },
    h("h4", {}, `Gate ${gate.name} (${whose}): `, h("span", { class: `badge ${gate.passed ? "ok" : "bad"}` }, gate.passed ? "PASSED" : "FAILED")),
    table(null, ["rule", "observed", "verdict", "why"], gate.verdicts.map((x) => [h("code", {}, x.rule), x.observed,
      h("span", { class: x.passed ? "ok" : "bad" }, x.passed ? "pass" : "FAIL"), x.why])));
}

// "verdict: question → output (expected ...)", leaving out what the report redacted or lacks.
function failureText(f) {
  const want = f.answers || f.reference || "";
  let text = ` ${f.verdict || ""}`;
  if (f.question) text += `: ${f.question}`;
  if (f.output || want) text += ` → ${JSON.stringify(f.output || "")} (expected ${JSON.stringify(want)})`;
  return text;
}

// "cpu, 2 threads, bfloat16 on AMD EPYC" from the manifest's hardware record.
function hardwareText(hw) {
  const dtype = hw.dtype && typeof hw.dtype === "object" ? hw.dtype : {};
  return [hw.device, hw.torch_threads ? `${hw.torch_threads} threads` : null,
    dtype.dtype ? `${dtype.dtype}${dtype.cpu_model ? ` on ${dtype.cpu_model}` : ""}` : null,
    hw.gpu || null].filter(Boolean).join(", ");
}
